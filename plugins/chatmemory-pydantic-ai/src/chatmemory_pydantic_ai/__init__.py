"""chatmemory capability for pydantic-ai: every run recorded as a history.

```python
from chatmemory_pydantic_ai import ChatMemoryCapability

agent = Agent(model, capabilities=[ChatMemoryCapability(chat, conversation.id)])
```
"""

from __future__ import annotations

from chatmemory_pydantic_ai._convert import NATIVE_FORMAT, to_new_messages
from chatmemory_pydantic_ai._reload import load_messages, to_model_messages
from chatmemory_pydantic_ai.capability import ChatMemoryCapability

__all__ = ["NATIVE_FORMAT", "ChatMemoryCapability", "load_messages", "to_model_messages", "to_new_messages"]
