"""Rule select_molorec: the fused adapter whose learning rate is best on the selection set
(the validation examples no adapter trained on); with evaluate.order_check, its order-check
files come along."""

import json
import shutil

from molorec.evaluate import load_metrics, select_lr
from molorec.io.parquet import write_json
from molorec.runlog import log_to

with log_to(snakemake.log[0]) as log:
    lrs = snakemake.params.lrs
    val = {lr: load_metrics(p) for lr, p in zip(lrs, snakemake.input.val, strict=True)}
    test = {lr: load_metrics(p) for lr, p in zip(lrs, snakemake.input.test, strict=True)}
    selection = select_lr(val, test)
    chosen = lrs.index(selection["selected_lr"])
    shutil.copyfile(snakemake.input.predictions[chosen], snakemake.output.predictions)
    metrics = dict(test[selection["selected_lr"]], selected_lr=selection["selected_lr"])
    write_json(metrics, snakemake.output.metrics)
    write_json(selection, snakemake.output.selection)
    # With evaluate.order_check, the chosen lr's order check: molorec/order_check/.
    for name in ("order_check_predictions", "order_check_metrics"):
        if name in snakemake.output.keys():
            shutil.copyfile(snakemake.input[name][chosen], snakemake.output[name])
    log.info(
        "selected lr %s on the selection set: %s", selection["selected_lr"], json.dumps(selection)
    )
