"""Pure Responses ⇄ Chat Completions conversion: plain dicts in, plain dicts out, no I/O."""

from nemo_gym.conversion.chat_to_responses import chat_to_response, empty_response
from nemo_gym.conversion.errors import ConversionError, UpstreamFormatError
from nemo_gym.conversion.responses_to_chat import ConversionOptions, responses_to_chat

__all__ = [
    "ConversionError",
    "ConversionOptions",
    "UpstreamFormatError",
    "chat_to_response",
    "empty_response",
    "responses_to_chat",
]
