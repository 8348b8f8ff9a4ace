from __future__ import annotations

import os

# Provider keys of the test configs; set at import so module-level runtimes can load.
os.environ["TEST_OPENAI_KEY"] = "sk-test-openai"
os.environ["TEST_ANTHROPIC_KEY"] = "sk-ant-test"
