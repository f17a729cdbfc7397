import pytest
import torch
from transformers import Qwen2_5_VLForConditionalGeneration

from longrl.cli import main
from longrl.config import load_config
from longrl.train.rl import run_rl
from tests.e2e.conftest import rl_overrides


def test_export_writes_a_checkpoint_transformers_loads_and_generates_with(
    tiny_vl_checkpoint, synth_data, tmp_path
):
    config = load_config(
        None,
        rl_overrides(tiny_vl_checkpoint, synth_data, tmp_path / "run", **{"trainer.max_steps": 1}),
    )
    run_dir = run_rl(config)
    out = tmp_path / "exported"
    assert main(["export", str(run_dir), str(out)]) == 0
    assert (out / "config.json").is_file() and (out / "model.safetensors").is_file()
    assert (out / "tokenizer.json").is_file()

    # Plain transformers, no longrl code: load and generate.
    exported = Qwen2_5_VLForConditionalGeneration.from_pretrained(out, local_files_only=True)
    from safetensors.torch import load_file

    trained = load_file(str(run_dir / "checkpoints" / "step_00000001" / "model.safetensors"))
    state = exported.state_dict()
    for name, tensor in trained.items():
        assert torch.equal(state[name], tensor), name
    ids = torch.tensor([[5, 6, 7, 8]])
    generated = exported.generate(input_ids=ids, max_new_tokens=4, do_sample=False)
    assert generated.shape == (1, 8)

    # A second export into a non-empty directory is refused; a bad path gives exit 2.
    assert main(["export", str(run_dir), str(out)]) == 2
    assert main(["export", str(tmp_path / "nope"), str(tmp_path / "x")]) == 2


def test_export_refuses_weights_of_another_model(tiny_vl_checkpoint, synth_data, tmp_path):
    from safetensors.torch import save_file

    from longrl.train.export import export_hf

    config = load_config(
        None,
        rl_overrides(tiny_vl_checkpoint, synth_data, tmp_path / "run", **{"trainer.max_steps": 1}),
    )
    run_dir = run_rl(config)
    step = run_dir / "checkpoints" / "step_00000001"
    save_file({"not.a.weight": torch.zeros(2)}, str(step / "model.safetensors"))
    with pytest.raises(ValueError, match="do not fit the model"):
        export_hf(step, tmp_path / "out")
