"""The image flags of the CLI: --images and --image-size reach the workload, bad values are one line."""

from __future__ import annotations

import json

import pytest
from tests.shells.test_cli import assert_one_error_line, invoke

from memfit import api
from memfit.core.workload import Inference


def test_images_flags_reach_the_workload_and_the_json() -> None:
    """--images 2 --image-size 1080x1920 is Inference(images=2, image_size=(1080, 1920)); --json = the API."""
    out = invoke("estimate", "gemma-3-4b-it", "--prompt-tokens", "128", "--images", "2", "--image-size",
                 "1080x1920", "--json")
    assert out.exit_code == 0, out.stderr
    data = json.loads(out.stdout)
    assert (data["workload"]["images"], data["workload"]["image_size"]) == (2, [1080, 1920])
    expected = api.estimate("gemma-3-4b-it", Inference(prompt_tokens=128, images=2, image_size=(1080, 1920)))
    assert data == json.loads(json.dumps(expected.to_dict()))


@pytest.mark.parametrize(("args", "mentions"), [
    (["gemma-3-4b-it", "--images", "-1"], "images=-1 must be at least 0"),
    (["gemma-3-4b-it", "--images", "1", "--image-size", "0x896"],
     "image_size=0x896: height=0 must be at least 1"),
    (["gemma-3-4b-it", "--image-size", "896x896"], "needs images >= 1"),
    (["Llama-3.1-8B", "--images", "1"], "Llama-3.1-8B is a text-only model"),
    (["gemma-3-4b-it", "--task", "train", "--images", "1"], "training with images is not modelled"),
    (["gemma-3-4b-it", "--images", "1", "--runtime", "vllm"], "runtime=transformers only"),
])
def test_bad_image_flags_are_one_error_line(args: list[str], mentions: str) -> None:
    """Each impossible image setting exits 2 with one `error:` line naming it."""
    assert_one_error_line(invoke("estimate", *args), 2, mentions=mentions)
