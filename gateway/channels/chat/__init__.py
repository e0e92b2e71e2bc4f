"""The chat channel: visitor sessions, hand-offs and what a visitor may see (the web layer serves the websocket)."""

from gateway.channels.chat.channel import ChatChannel, ChatSettings, Outlet, VisitorSession, visitor_identity

__all__ = ["ChatChannel", "ChatSettings", "Outlet", "VisitorSession", "visitor_identity"]
