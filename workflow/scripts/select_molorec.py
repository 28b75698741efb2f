"""Rules select_molorec and select_grid: the point of a grid (molorec's fused lrs, a merge's
weights, a control's lrs) best on the selection set (the validation examples no adapter
trained on). select_molorec also copies the chosen lr's test evaluation (and with
evaluate.order_check its order check); a grid variant's is evaluate_selected's."""

import json
import shutil
from pathlib import Path

from molorec.evaluate import load_metrics, select_point
from molorec.io.parquet import write_json
from molorec.runlog import log_to

with log_to(snakemake.log[0]) as log:
    points = snakemake.params.points
    # Each split's evaluation folder holds one folder per point of the grid; a grid
    # variant (select_grid) is evaluated on test at its chosen point only, afterwards.
    folders = {split: Path(snakemake.input[split]) for split in snakemake.input.keys()}
    val = {p: load_metrics(folders["val"] / p / "metrics.json") for p in points}
    test = None
    if "test" in folders:
        test = {p: load_metrics(folders["test"] / p / "metrics.json") for p in points}
    selection = select_point(val, test)
    write_json(selection, snakemake.output.selection)
    log.info("selected %s on the selection set: %s", selection["selected"], json.dumps(selection))
    if test is not None:
        chosen = folders["test"] / selection["selected"]
        shutil.copyfile(chosen / "predictions.parquet", snakemake.output.predictions)
        keys = {k: selection[k] for k in ("selected", "selected_lr") if k in selection}
        write_json(dict(test[selection["selected"]], **keys), snakemake.output.metrics)
        # With evaluate.order_check, the chosen point's order check: <variant>/order_check/.
        for name in ("order_check_predictions", "order_check_metrics"):
            if name in snakemake.output.keys():
                source = chosen / Path(snakemake.output[name]).relative_to(
                    Path(snakemake.output.metrics).parent
                )
                shutil.copyfile(source, snakemake.output[name])
