"""chatmemory Session and run hooks for the OpenAI Agents SDK: every run recorded as a history.

```python
session = ChatMemorySession(memory.scoped(Principal("alice")), conversation.id)
result = await session.run(agent, "What is 2+3?")
```
"""

from __future__ import annotations

from chatmemory_openai_agents._hooks import ChatMemoryHooks
from chatmemory_openai_agents._items import NATIVE_FORMAT
from chatmemory_openai_agents._models import resolve_model_name
from chatmemory_openai_agents.session import ChatMemorySession

__all__ = ["NATIVE_FORMAT", "ChatMemoryHooks", "ChatMemorySession", "resolve_model_name"]
