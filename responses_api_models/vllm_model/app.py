"""The vLLM adapter server: `/v1/responses`, `/v1/chat/completions`, `/health[?upstream=true]`."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from pydantic import PrivateAttr
from starlette.responses import Response

from nemo_gym.responses_converter import VLLMConverter, split_responses_input_output_items
from nemo_gym.server.json_io import json_response, parse_json_object
from nemo_gym.server.request_path import FastHandler
from nemo_gym.upstream.model_server import PooledModelServer
from responses_api_models.vllm_model.config import VLLMModelConfig
from responses_api_models.vllm_model.metrics import AdapterCollector
from responses_api_models.vllm_model.serving import VLLMServing
from responses_api_models.vllm_model.streaming import StreamingServing

# NeMo Gym agents import VLLMConverter and split_responses_input_output_items from this module.
__all__ = ["VLLMConverter", "VLLMModel", "VLLMModelConfig", "split_responses_input_output_items"]


class VLLMModel(PooledModelServer):
    config: VLLMModelConfig
    _serving: VLLMServing = PrivateAttr()

    def upstream_config(self) -> VLLMModelConfig:
        return self.config  # the adapter's config extends the upstream keys

    def model_post_init(self, context: Any, /) -> None:
        super().model_post_init(context)
        self._serving = VLLMServing(self.config, self.pool)

    @property
    def serving(self) -> VLLMServing:
        return self._serving

    def metrics_collectors(self) -> list[Any]:
        return [*super().metrics_collectors(), AdapterCollector(self.serving, self.pool)]

    async def detailed_health(self, request: Request) -> Response:
        if request.query_params.get("upstream", "").lower() not in ("1", "true", "yes"):
            return await super().detailed_health(request)
        report = await self.pool.health_report()
        if self.serving.token_mode:  # drift is measured in token mode only
            for entry, upstream in zip(report, self.pool.upstreams, strict=True):
                entry["token_drift"] = self.serving.drift_counts(upstream.index)
        healthy = sum(entry["status"] == "healthy" for entry in report)
        status = "ok" if healthy == len(report) else ("degraded" if healthy else "unavailable")
        return json_response({"status": status, "upstreams": report}, status_code=200 if healthy else 503)

    def fast_routes(self) -> dict[str, FastHandler]:
        serving = self.serving
        streaming = StreamingServing(serving)

        async def responses(body: bytes, session_id: str) -> Any:
            params = parse_json_object(body)
            if params.get("stream") is True:
                return await streaming.responses(params, session_id)
            return await serving.responses(params, session_id)

        async def chat_completions(body: bytes, session_id: str) -> Any:
            params = parse_json_object(body)
            if params.get("stream") is True:
                serving.check_messages(params)
                return await streaming.chat_completions(params, session_id)
            return await serving.chat_completions(params, session_id)

        return {"/v1/responses": responses, "/v1/chat/completions": chat_completions}


if __name__ == "__main__":
    VLLMModel.run_webserver()
