"""Every Redis key Switchboard uses, and its lifetime. Nothing else builds key strings.

Keys that are used together share a hash tag, so the Lua scripts that touch them work on
Redis Cluster too. Conversations are spread over ``partitions``; a conversation's keys and
its partition's work stream share the tag ``{<prefix>:<partition>}``.

| key                                   | type   | lifetime                                  |
|---------------------------------------|--------|-------------------------------------------|
| ``{t}:work``                          | stream | entries deleted once handled              |
| ``{t}:conv:<conversation>``           | hash   | ``conversation_ttl_s``, renewed per message |
| ``{t}:inbox:<conversation>``          | list   | ``conversation_ttl_s``, emptied as answered |
| ``{t}:lease:<conversation>``          | string | ``lease_ttl_s``, renewed while a run works  |
| ``{t}:msg:<message id>``              | hash   | ``MESSAGE_PENDING_TTL_S``, then ``dedupe_ttl_s`` once answered |
| ``{t}:seen:<platform>:<event id>``    | string | ``dedupe_ttl_s``                          |
| ``{t}:replay:<thread id>``            | string | ``conversation_ttl_s`` (history of a ``state: replay`` backend) |
| ``<prefix>:binding:{<plat>:<ws>}:<channel>`` | string | none (admin decisions are kept)    |
| ``<prefix>:assistant:<backend>:<profile>``   | hash   | none (mirrors the backend's assistant) |
| ``<prefix>:audit:{<plat>:<ws>}``             | stream | none; trimmed to ``AUDIT_MAX_ENTRIES`` (binding changes) |
| ``<prefix>:notice:{<plat>:<ws>}:<channel>``  | string | ``NOTICE_TTL_S`` (the "not enabled here" notice was given) |
| ``<prefix>:rate:{<plat>:<ws>}:<profile>:<u|c>:<id>`` | zset | the rate limit's window, renewed per message |

A workspace's binding keys, its audit stream, notices and rate windows share the tag
``{<plat>:<ws>}``: a binding change and its audit entry are written by one script.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

MESSAGE_PENDING_TTL_S = 7 * 86_400
AUDIT_MAX_ENTRIES = 1000
"""Binding changes kept per workspace/guild; older entries are trimmed as new ones are added."""
NOTICE_TTL_S = 86_400
"""A place where the bot is not enabled is told so at most once in this many seconds."""
WORK_GROUP = "workers"


@dataclass(frozen=True)
class Keys:
    prefix: str = "sb"
    partitions: int = 1

    def partition_of(self, conversation: str) -> int:
        return zlib.crc32(conversation.encode()) % self.partitions

    def tag(self, partition: int) -> str:
        return f"{{{self.prefix}:{partition}}}"

    def _tag_for(self, conversation: str) -> str:
        return self.tag(self.partition_of(conversation))

    def work(self, partition: int) -> str:
        return f"{self.tag(partition)}:work"

    def work_for(self, conversation: str) -> str:
        return f"{self._tag_for(conversation)}:work"

    def conv(self, conversation: str) -> str:
        return f"{self._tag_for(conversation)}:conv:{conversation}"

    def inbox(self, conversation: str) -> str:
        return f"{self._tag_for(conversation)}:inbox:{conversation}"

    def lease(self, conversation: str) -> str:
        return f"{self._tag_for(conversation)}:lease:{conversation}"

    def msg(self, conversation: str, message_id: str) -> str:
        return f"{self._tag_for(conversation)}:msg:{message_id}"

    def seen(self, conversation: str, platform: str, event_id: str) -> str:
        return f"{self._tag_for(conversation)}:seen:{platform}:{event_id}"

    def replay(self, conversation: str, thread_id: str) -> str:
        """The history a ``state: replay`` backend keeps for one thread of ``conversation``."""
        return f"{self._tag_for(conversation)}:replay:{thread_id}"

    def binding(self, platform: str, workspace: str, channel: str) -> str:
        """``channel`` is ``*`` for the workspace/guild default."""
        return f"{self.prefix}:binding:{{{platform}:{workspace}}}:{channel}"

    def parse_binding(self, key: str) -> tuple[str, str, str]:
        """(platform, workspace, channel) of a key made by ``binding``."""
        tag, channel = key.removeprefix(f"{self.prefix}:binding:{{").split("}:", 1)
        platform, workspace = tag.split(":", 1)
        return platform, workspace, channel

    def binding_pattern(self) -> str:
        return f"{self.prefix}:binding:*"

    def assistant(self, backend: str, profile: str) -> str:
        return f"{self.prefix}:assistant:{backend}:{profile}"

    def _workspace_tag(self, platform: str, workspace: str) -> str:
        return f"{{{platform}:{workspace}}}"

    def audit(self, platform: str, workspace: str) -> str:
        """Binding changes in one workspace/guild, oldest first (same tag as its binding keys)."""
        return f"{self.prefix}:audit:{self._workspace_tag(platform, workspace)}"

    def audit_pattern(self) -> str:
        return f"{self.prefix}:audit:*"

    def notice(self, platform: str, workspace: str, channel: str) -> str:
        """Set while the "not enabled here" notice given in ``channel`` is recent."""
        return f"{self.prefix}:notice:{self._workspace_tag(platform, workspace)}:{channel}"

    def rate(self, platform: str, workspace: str, profile: str, kind: str, subject: str) -> str:
        """The sliding window of ``profile``'s messages by one user (``kind`` ``u``) or in one channel (``c``)."""
        return f"{self.prefix}:rate:{self._workspace_tag(platform, workspace)}:{profile}:{kind}:{subject}"
