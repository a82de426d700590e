"""datakit/train/kernels.py and --kernels: what runs where, and one-line refusals."""


import pytest
import torch

from datakit.errors import UserError
from datakit.train import kernels as K
from datakit.train.config import make_config
from datakit.train.trainer import _fingerprint


class _Tiny(torch.nn.Module):
    class config:  # noqa: N801 - the shape of a transformers config
        model_type = "qwen2"


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a CUDA GPU")
def test_cpu_runs_pytorch_kernels_and_liger_is_refused_in_one_line():
    cpu = torch.device("cpu")
    assert K.apply(_Tiny(), "auto", cpu) == "torch"
    assert K.apply(_Tiny(), "torch", cpu) == "torch"
    with pytest.raises(UserError) as e:
        K.apply(_Tiny(), "liger", cpu)
    assert "CUDA" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(UserError):
        K.apply(_Tiny(), "triton", cpu)


def test_bad_kernels_setting_names_the_field(tmp_path):
    with pytest.raises(UserError) as e:
        make_config(None, data="d.jsonl", model="m", out=str(tmp_path), kernels="fast")
    assert "kernels" in str(e.value)


def test_kernels_do_not_block_resume(tmp_path):
    a = make_config(None, data="d.jsonl", model="m", out=str(tmp_path), kernels="auto")
    b = make_config(None, data="d.jsonl", model="m", out=str(tmp_path), kernels="torch")
    assert _fingerprint(a, "sha") == _fingerprint(b, "sha")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a CUDA GPU")
def test_cli_liger_without_a_gpu_is_one_line_before_the_model_loads(tmp_path):
    from helpers import assert_train_refused_before_loading

    assert_train_refused_before_loading(tmp_path, ["--kernels", "liger"], "--kernels liger", "CUDA")
