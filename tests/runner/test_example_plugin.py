"""The README's "Writing and testing a plugin" example, tested with the test kit."""

from example_plugin import ApiKeyCheck

from apisix_openai_triton.runner.testkit import run_runner

CONF = [("api-key-check", {"key": "s3cret"})]


async def test_api_key_check() -> None:
    async with run_runner(plugins=[ApiKeyCheck]) as runner, runner.client() as gateway:
        denied = await gateway.request(CONF, headers={"x-api-key": "wrong"})
        assert denied.response is not None and denied.response.status == 401

        allowed = await gateway.request(CONF, headers={"x-api-key": "s3cret"}, path="/v1/models")
        assert allowed.upstream is not None and allowed.upstream.path == "/v1/models"
        assert allowed.upstream.header("x-api-key") is None  # not forwarded upstream

        refused = await gateway.request([("api-key-check", {})])  # no key: PrepareConf refused
        assert refused.response is not None and refused.response.status == 503
