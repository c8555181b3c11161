"""Train the default model (DCN-v2) from Python instead of the command line, then score a few
examples with the saved model.

    python examples/python_api.py [OUT_DIR]
"""

import sys

from terarec.train import fit, load_config, predict_checkpoint

out = sys.argv[1] if len(sys.argv) > 1 else "runs/python_api"
config = load_config(
    overrides=[
        ("data.synthetic.num_examples", 20_000),
        ("data.synthetic.num_eval_examples", 5_000),
        ("train.out", out),
        ("train.progress", False),
    ]
)
result = fit(config)
print(f"AUC {result.metrics['auc']:.4f} (ceiling {result.metrics['ground_truth_auc']:.4f})")
print(f"checkpoint: {result.checkpoint}")

# The run directory stands for its best validated checkpoint; with no data path given, the
# checkpoint scores the run's own evaluation split.
labels, probabilities, _ = predict_checkpoint(result.run_dir)
for label, probability in zip(labels[:5], probabilities[:5]):
    print(f"clicked={int(label)}  predicted click probability={probability:.3f}")
