"""Conversation state for the Responses API: turns, their bounds, the stores keeping them."""
