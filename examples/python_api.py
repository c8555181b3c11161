"""Train DLRM from Python instead of the command line, then score a few examples.

    python examples/python_api.py
"""

from terarec.train import fit, load_config

config = load_config(
    overrides=[
        ("data.synthetic.num_examples", 100_000),
        ("data.synthetic.num_eval_examples", 20_000),
        ("train.out", "runs/python_api"),
        ("train.progress", False),
    ]
)
result = fit(config)
print(f"AUC {result.metrics['auc']:.4f} (ceiling {result.metrics['ground_truth_auc']:.4f})")
print(f"checkpoint: {result.checkpoint}")
