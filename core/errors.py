"""Switchboard's exception tree. Library errors are translated where they enter.

    SwitchboardError                 root; ``user_message`` is safe to show in chat
    ├── ConfigError                  the config file or environment is invalid (all problems at once)
    ├── StoreUnavailable             Redis cannot be reached or answered with an error
    ├── LeaseLost                    another process owns the conversation now; stop writing
    ├── BackendError                 the assistant backend refused or failed
    │   ├── BackendAuthError         401/403: key or permissions
    │   ├── BackendRateLimited       429 after the SDK's own retries
    │   ├── BackendBadRequest        400/422: the request was refused
    │   ├── BackendNotFound          404: thread, run or assistant unknown
    │   ├── BackendUnavailable       5xx or the connection dropped
    │   └── BackendTimeout           no answer in time
    └── RunEnded                     a run reached a terminal status other than completed

Every error carries data (status, code, retry_after, …), and ``user_message`` never contains
secrets or internals: it is written for the person in the chat.
"""

from __future__ import annotations


class SwitchboardError(Exception):
    """Root of every error Switchboard raises on purpose."""

    user_message: str = "Something went wrong while answering."


class ConfigError(SwitchboardError):
    """The configuration is invalid. ``problems`` lists every problem found, one line each."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{source}: {len(problems)} problem(s)\n{lines}")


class StoreUnavailable(SwitchboardError):
    user_message = "The gateway's storage is unavailable; please try again in a moment."


class LeaseLost(SwitchboardError):
    """The lease on a conversation expired or was taken: this process must stop writing."""

    def __init__(self, conversation: str) -> None:
        self.conversation = conversation
        super().__init__(f"lease lost on {conversation}")


class BackendError(SwitchboardError):
    user_message = "The assistant service failed to answer."

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None) -> None:
        self.status = status
        self.code = code
        super().__init__(message)


class BackendAuthError(BackendError):
    user_message = "The assistant service refused the gateway's credentials; an admin must fix the API key."


class BackendRateLimited(BackendError):
    user_message = "The assistant service is rate limiting us; please try again shortly."

    def __init__(
        self, message: str, *, status: int | None = 429, code: str | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message, status=status, code=code)
        self.retry_after_s = retry_after_s


class BackendBadRequest(BackendError):
    user_message = "The assistant service refused the request."


class BackendNotFound(BackendError):
    user_message = "The assistant or conversation was not found on the assistant service."


class BackendUnavailable(BackendError):
    user_message = "The assistant service is unavailable right now; please try again."


class BackendTimeout(BackendError):
    user_message = "The assistant service took too long to answer."


_RUN_END_MESSAGES = {
    "failed": "The assistant failed while answering.",
    "cancelled": "The answer was cancelled.",
    "expired": "The answer expired before it was finished.",
    "incomplete": "The answer was cut short (a token limit was reached).",
}


class RunEnded(SwitchboardError):
    """A run ended ``failed``, ``cancelled``, ``expired`` or ``incomplete``."""

    def __init__(self, status: str, *, code: str | None = None, detail: str | None = None) -> None:
        self.status = status
        self.code = code
        self.detail = detail
        self.user_message = _RUN_END_MESSAGES.get(status, f"The run ended with status {status}.")
        super().__init__(f"run ended {status}" + (f" ({code}: {detail})" if code or detail else ""))
