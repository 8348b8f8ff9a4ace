"""Translation between the OpenAI and Anthropic APIs: pure functions per direction."""
