"""Rule select_molorec: the fused adapter whose learning rate is best on the selection set
(the validation examples no adapter trained on); with evaluate.order_check, its order-check
files come along."""

import json
import shutil
from pathlib import Path

from molorec.evaluate import load_metrics, select_lr
from molorec.io.parquet import write_json
from molorec.runlog import log_to

with log_to(snakemake.log[0]) as log:
    lrs = snakemake.params.lrs
    # Each split's evaluation folder holds one lr<lr>/ folder per fused setting.
    folders = {split: Path(snakemake.input[split]) for split in ("val", "test")}
    val = {lr: load_metrics(folders["val"] / f"lr{lr}" / "metrics.json") for lr in lrs}
    test = {lr: load_metrics(folders["test"] / f"lr{lr}" / "metrics.json") for lr in lrs}
    selection = select_lr(val, test)
    chosen = folders["test"] / f"lr{selection['selected_lr']}"
    shutil.copyfile(chosen / "predictions.parquet", snakemake.output.predictions)
    metrics = dict(test[selection["selected_lr"]], selected_lr=selection["selected_lr"])
    write_json(metrics, snakemake.output.metrics)
    write_json(selection, snakemake.output.selection)
    # With evaluate.order_check, the chosen lr's order check: molorec/order_check/.
    for name in ("order_check_predictions", "order_check_metrics"):
        if name in snakemake.output.keys():
            source = chosen / Path(snakemake.output[name]).relative_to(
                Path(snakemake.output.metrics).parent
            )
            shutil.copyfile(source, snakemake.output[name])
    log.info(
        "selected lr %s on the selection set: %s", selection["selected_lr"], json.dumps(selection)
    )
