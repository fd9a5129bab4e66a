import multiprocessing
from concurrent.futures import ProcessPoolExecutor

from synthetic import learn, small_model, train_task


def test_bahdanau_learns_to_copy():
    acc = train_task(small_model(), "copy", steps=400)
    assert acc >= 0.95, acc


def test_luong_input_feeding_learns_to_copy():
    acc = train_task(small_model("model.decoder=luong", "model.attention.score=general"),
                     "copy", steps=400)
    assert acc >= 0.95, acc


def test_untrained_model_does_not_copy():
    acc = train_task(small_model(), "copy", steps=0)
    assert acc < 0.2, acc


# Reversal of 20-40 tokens: the first output token depends on the last input token, so a fixed
# context vector must carry the whole sequence while attention can look it up. The three models
# get the same budget and train two at a time, one per core.
REVERSAL = {"min_len": 20, "max_len": 40, "steps": 400, "lr": 3e-3}


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
    assert acc["bahdanau"] >= 0.90, acc
    assert acc["luong"] >= 0.90, acc
    assert acc["no attention (cho)"] < 0.6, acc


def test_transformer_learns_reversal():
    model = small_model("model.arch=transformer", "model.attention.score=scaled_dot",
                        "model.attention.heads=4", "model.embed_size=64", "model.ff_size=128",
                        "model.encoder_layers=2", "model.decoder_layers=2", "model.norm=pre",
                        "model.attention_dropout=0.0")
    acc = train_task(model, "reverse", min_len=5, max_len=15, steps=500, lr=1e-3)
    assert acc >= 0.95, acc
