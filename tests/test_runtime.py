"""seq2seq.runtime: device choice and backend settings."""

import os
import subprocess
import sys
import textwrap

import pytest
import torch

from seq2seq.errors import Seq2SeqError
from seq2seq.runtime import (
    ONEDNN_CACHE_CAPACITY,
    ONEDNN_CACHES,
    bound_onednn_cache,
    cpu_has_avx512,
    cpu_has_bf16,
    cpu_info,
    keep_freed_memory,
    parse_cpuinfo,
    pick_device,
    tune_backends,
)


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


def test_bound_onednn_cache_sets_both_capacities_unless_the_user_did(monkeypatch):
    for name in ONEDNN_CACHES:  # set, then deleted: monkeypatch restores what was there
        monkeypatch.setenv(name, "0")
        monkeypatch.delenv(name)
    monkeypatch.setenv("LRU_CACHE_CAPACITY", "512")
    assert bound_onednn_cache() == {"ONEDNN_PRIMITIVE_CACHE_CAPACITY": str(ONEDNN_CACHE_CAPACITY),
                                    "LRU_CACHE_CAPACITY": "512"}
    assert os.environ["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] == str(ONEDNN_CACHE_CAPACITY)
    assert os.environ["LRU_CACHE_CAPACITY"] == "512"


# bf16 products of 200 new shapes in a fresh process; prints the heap memory still in use
# (glibc's mallinfo2) that they left behind: the primitives oneDNN cached for them
_NEW_SHAPES = textwrap.dedent("""
    import ctypes, sys
    from seq2seq.runtime import bound_onednn_cache
    bound_onednn_cache(int(sys.argv[1]))
    import torch

    class Info(ctypes.Structure):
        _fields_ = [(n, ctypes.c_size_t) for n in
                    "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks "
                    "keepcost".split()]

    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = Info
    w = torch.randn(64, 64, dtype=torch.bfloat16)
    x = torch.randn(300, 64, dtype=torch.bfloat16)
    x[:10] @ w
    before = libc.mallinfo2().uordblks
    for n in range(11, 211):
        x[:n] @ w
    print(libc.mallinfo2().uordblks - before)
""")


@pytest.mark.skipif(not (sys.platform.startswith("linux") and cpu_has_bf16()),
                    reason="bf16 products run in oneDNN on a CPU with bf16 arithmetic (glibc)")
def test_bound_onednn_cache_bounds_what_new_shapes_leave_behind():
    env = {k: v for k, v in os.environ.items() if k not in ONEDNN_CACHES}

    def kept(capacity: int) -> int:
        out = subprocess.run([sys.executable, "-c", _NEW_SHAPES, str(capacity)], env=env,
                             capture_output=True, text=True, check=True)
        return int(out.stdout.split()[-1])

    unbounded, bounded = kept(1024), kept(4)  # 112 and 1.7 MB on an AVX-512 BF16 CPU
    assert unbounded > 20e6
    assert bounded < 0.1 * unbounded


# a fresh process: mapped bytes (mallinfo2's hblkhd) while a 16 MB tensor is alive, before and
# after keep_freed_memory, which then returns in the last line
_MAPPED = textwrap.dedent("""
    import ctypes, sys
    import torch
    from seq2seq.runtime import keep_freed_memory

    class MallInfo2(ctypes.Structure):
        _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks",
                    "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = MallInfo2

    def mapped_while_alive():
        x = torch.empty(4 << 20)  # 16 MB
        return libc.mallinfo2().hblkhd

    before = mapped_while_alive()
    kept = keep_freed_memory()
    print(before, mapped_while_alive(), kept)
""")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc only")
def test_keep_freed_memory_serves_large_blocks_from_the_heap_unless_the_user_set_malloc():
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")
           and k != "GLIBC_TUNABLES"}

    def run(extra: dict) -> list[str]:
        out = subprocess.run([sys.executable, "-c", _MAPPED], env={**env, **extra},
                             capture_output=True, text=True, check=True)
        return out.stdout.split()

    before, after, kept = run({})
    assert kept == "True"
    assert int(before) >= 16 << 20  # glibc's default: a block this large is a memory map
    assert int(after) < 16 << 20  # ... and from the heap after the call
    # the user's own malloc settings win: nothing changes
    assert run({"MALLOC_TOP_PAD_": "0"})[2] == "False"
    assert run({"GLIBC_TUNABLES": "glibc.malloc.top_pad=0"})[2] == "False"
    assert run({"GLIBC_TUNABLES": "glibc.rtld.nns=4"})[2] == "True"  # not malloc's


def test_keep_freed_memory_is_a_no_op_off_linux(monkeypatch):
    monkeypatch.setattr(sys, "platform", "darwin")
    assert keep_freed_memory() is False


_X86 = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 9R14 avx512f-lookalike
flags\t\t: fpu sse avx2 avx512f avx512_bf16
bugs\t\t: sysret_ss_attrs

processor\t: 1
model name\t: AMD EPYC 9R14 avx512f-lookalike
flags\t\t: fpu sse avx2 avx512f avx512_bf16
"""


def test_cpuinfo_gives_the_model_name_and_only_the_flags_line():
    name, flags = parse_cpuinfo(_X86)
    assert name == "AMD EPYC 9R14 avx512f-lookalike"
    assert flags == {"fpu", "sse", "avx2", "avx512f", "avx512_bf16"}  # not the name's words
    assert parse_cpuinfo("processor : 0\nFeatures : fp asimd bf16\n") == (None, {"fp", "asimd",
                                                                              "bf16"})
    assert parse_cpuinfo("") == (None, frozenset())


@pytest.mark.parametrize("flags, bf16, avx512", [
    ({"avx2"}, False, False), ({"avx2", "avx512f"}, False, True),
    ({"avx512f", "avx512_bf16"}, True, True), ({"amx_bf16", "avx512f"}, True, True)])
def test_cpu_kind_follows_the_flags(monkeypatch, flags, bf16, avx512):
    monkeypatch.setattr("seq2seq.runtime.cpu_info", lambda: ("cpu", frozenset(flags)))
    assert (cpu_has_bf16(), cpu_has_avx512()) == (bf16, avx512)


def test_this_cpu_has_a_name():
    name, flags = cpu_info()
    assert isinstance(name, str) and name and isinstance(flags, frozenset)
