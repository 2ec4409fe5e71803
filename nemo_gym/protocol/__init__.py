"""The OpenAI Responses and Chat Completions wire formats as validated pydantic models.

`nemo_gym.openai_utils` re-exports the models and constants under the import path NeMo Gym
environments use. The modules are split by job: `tokens` (the RL token fields an item may
carry), `tagging` (how each union picks its member), `items` (Responses API items and their
unions), `responses` (Responses request, usage and response) and `chat` (Chat Completions
request and response).

The adapter's hot path does not validate through these models; see
`nemo_gym.conversion.responses_to_chat` for why.
"""
