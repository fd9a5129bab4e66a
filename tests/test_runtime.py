"""seq2seq.runtime: device choice and backend settings."""

import pytest
import torch

from seq2seq.errors import Seq2SeqError
from seq2seq.runtime import pick_device, tune_backends


@pytest.fixture
def backend_flags():
    """Restore the global backend flags that tune_backends sets."""
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
             torch.backends.cuda.cudnn_sdp_enabled())
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved[:2]
    torch.backends.cuda.enable_cudnn_sdp(saved[2])


def test_fp32_on_cuda_means_float32_not_tf32(backend_flags):
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    tune_backends(torch.device("cpu"))  # nothing changes for a CPU run
    assert torch.backends.cudnn.allow_tf32 and torch.backends.cuda.matmul.allow_tf32
    tune_backends(torch.device("cuda"))
    assert not torch.backends.cudnn.allow_tf32
    assert not torch.backends.cuda.matmul.allow_tf32
    assert not torch.backends.cuda.cudnn_sdp_enabled()


def test_pick_device_refuses_unknown_names_and_missing_cuda():
    with pytest.raises(Seq2SeqError, match="not one of"):
        pick_device("tpu")
    assert pick_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        with pytest.raises(Seq2SeqError, match="no CUDA device"):
            pick_device("cuda")
