"""Slack adapter: @mentions, threads, DMs and ``/assistant`` through slack-bolt (HTTP or Socket Mode)."""

from bots.slack.adapter import SlackAdapter
from bots.slack.check import check
from bots.slack.sink import SlackReplySink, SlackSinkFactory

__all__ = ["SlackAdapter", "SlackReplySink", "SlackSinkFactory", "check"]
