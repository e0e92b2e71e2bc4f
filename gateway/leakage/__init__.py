"""Leakage: what slipped through (missed calls, unanswered texts, chats without a next step...), counted per day,
per owner and per conversation, as read models over the store."""
