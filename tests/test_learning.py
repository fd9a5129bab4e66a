import multiprocessing
from concurrent.futures import ProcessPoolExecutor

from synthetic import learn, small_model, train_task

# 400 updates: at 250 the Bahdanau model copied 0.94 of the tokens on an AVX-512 CPU (whose fp32
# kernels round differently from AVX2's, where it reached 0.95); at 300 and 400 both models
# reached 0.98-1.0 there
COPY_STEPS = 400


def test_bahdanau_learns_to_copy():
    acc = train_task(small_model(), "copy", steps=COPY_STEPS, lr=5e-3)
    assert acc >= 0.95, acc


def test_luong_input_feeding_learns_to_copy():
    acc = train_task(small_model("model.decoder=luong", "model.attention.score=general"),
                     "copy", steps=COPY_STEPS, lr=5e-3)
    assert acc >= 0.95, acc


def test_untrained_model_does_not_copy():
    acc = train_task(small_model(), "copy", steps=0)
    assert acc < 0.2, acc


# Reversal of 12-24 tokens: the first output token depends on the last input token, so a fixed
# context vector must carry the whole sequence while attention can look it up. The three models
# get the same budget and train two at a time, one per core. With this budget (53 s on a 2-core
# AVX2 machine) the attention models reached 0.97 and 0.95 token accuracy, the fixed context 0.16;
# neighbouring budgets gave 0.83-1.0 against 0.15-0.27, hence the thresholds below.
REVERSAL = {"min_len": 12, "max_len": 24, "steps": 250, "lr": 4e-3}


def test_reversal_needs_attention():
    models = {
        "bahdanau": [],
        "luong": ["model.decoder=luong", "model.attention.score=general"],
        "no attention (cho)": ["model.decoder=cho", "model.attention.score=none"],
    }
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(2, mp_context=ctx) as pool:
        jobs = {name: pool.submit(learn, ov, "reverse", REVERSAL) for name, ov in models.items()}
        acc = {name: job.result() for name, job in jobs.items()}
    print("reversal token accuracy:", acc)
    assert acc["bahdanau"] >= 0.85, acc
    assert acc["luong"] >= 0.85, acc
    assert acc["no attention (cho)"] < 0.5, acc


def test_transformer_learns_reversal():
    model = small_model("model.arch=transformer", "model.attention.score=scaled_dot",
                        "model.attention.heads=4", "model.embed_size=64", "model.ff_size=128",
                        "model.encoder_layers=2", "model.decoder_layers=2", "model.norm=pre",
                        "model.attention_dropout=0.0")
    # 800 updates at 1e-3: 300 at 2e-3 reached 0.95 on an AVX2 CPU but 0.94 on an AVX-512 one,
    # and 400-600 updates gave 0.83-0.97 there; at 1e-3, 500/600/800/1,000 updates gave
    # 0.947/0.962/0.993/0.989 (AVX-512)
    acc = train_task(model, "reverse", min_len=5, max_len=15, steps=800, lr=1e-3)
    assert acc >= 0.95, acc
