"""``switchboard check`` for Slack: are the variables coherent, and does Slack accept the tokens?"""

from __future__ import annotations

import aiohttp
from slack_sdk.errors import SlackApiError

from bots.slack.client import error_code, web_client
from core.settings import Settings

_NETWORK_ERRORS = (aiohttp.ClientError, TimeoutError)


async def check(settings: Settings) -> list[str]:
    """Call ``auth.test`` (and ``apps.connections.open`` in Socket Mode); one line per problem.

    Prints an ``ok`` line for what works, like the other checks. Never prints a token.
    """
    if settings.slack_app_token is None and settings.slack_signing_secret is None:
        return ["slack: set SLACK_APP_TOKEN (Socket Mode) or SLACK_SIGNING_SECRET (HTTP mode)"]
    async with aiohttp.ClientSession() as session:
        client = web_client(settings, session)
        try:
            auth = await client.auth_test()
        except SlackApiError as exc:
            return [f"slack: SLACK_BOT_TOKEN was refused by auth.test ({error_code(exc)})"]
        except _NETWORK_ERRORS as exc:
            return [f"slack: cannot reach {settings.slack_api_base()} ({type(exc).__name__})"]
        print(f"ok   slack bot @{auth.get('user')} in team {auth.get('team_id')} ({auth.get('team')})")
        if settings.slack_app_token is None:
            print("ok   slack HTTP mode: events at POST /slack/events")
            return []
        try:
            await client.apps_connections_open(app_token=settings.slack_app_token.get_secret_value())
        except SlackApiError as exc:
            return [f"slack: SLACK_APP_TOKEN was refused by apps.connections.open ({error_code(exc)})"]
        except _NETWORK_ERRORS as exc:
            return [f"slack: cannot reach {settings.slack_api_base()} ({type(exc).__name__})"]
        print("ok   slack Socket Mode: SLACK_APP_TOKEN accepted")
        return []
