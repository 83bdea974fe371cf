"""train.py --distribute: the tf.distribute strategy a training runs under, and its checks.

`none` (the default) uses no strategy at all: the single-device code path is unchanged.
`mirrored` replicates the model on every local GPU (on a machine without one, on every logical
CPU device, with a warning). `multiworker` is MultiWorkerMirroredStrategy across the machines the
`TF_CONFIG` environment variable lists; only the chief writes the model folder.

The checks here need no TensorFlow (train.py runs them before importing it); `make_strategy`
imports it.
"""

from __future__ import annotations

import json
import logging
import os

from autoencoder.errors import UserError

logger = logging.getLogger(__name__)

MODES = ("none", "mirrored", "multiworker")
TASK_TYPES = ("chief", "worker")


def check_distribute(mode: str, environ=None) -> dict | None:
    """Check --distribute (and, for multiworker, TF_CONFIG); return the parsed TF_CONFIG or None.

    ValueError with one line naming the flag or the TF_CONFIG field that is wrong.
    """
    if mode not in MODES:
        raise UserError(f"--distribute {mode}: expected one of {', '.join(MODES)}")
    if mode != "multiworker":
        return None
    return parse_tf_config((os.environ if environ is None else environ).get("TF_CONFIG"))


def parse_tf_config(text: str | None) -> dict:
    """TF_CONFIG as MultiWorkerMirroredStrategy reads it, checked field by field."""
    if text is None or not text.strip():
        raise UserError('--distribute multiworker needs TF_CONFIG: {"cluster": {"worker": ["host:port", ...]}, "task": {"type": '
                '"worker", "index": 0}}')
    try:
        config = json.loads(text)
    except json.JSONDecodeError as error:
        raise UserError(f"TF_CONFIG: not valid JSON ({error.msg} at character {error.pos})") from None
    if not isinstance(config, dict):
        raise UserError("TF_CONFIG: expected a JSON object with 'cluster' and 'task'")
    cluster = config.get("cluster")
    if not isinstance(cluster, dict) or not cluster:
        raise UserError("TF_CONFIG cluster: expected an object of task types to address lists, e.g. {\"worker\": [\"host:port\", ...]}")
    if "worker" not in cluster and "chief" not in cluster:
        raise UserError("TF_CONFIG cluster: expected a 'worker' (and optionally a 'chief') list")
    for task_type, addresses in cluster.items():
        if task_type not in TASK_TYPES:
            raise UserError(f"TF_CONFIG cluster.{task_type}: unsupported task type; MultiWorkerMirroredStrategy takes "
                    f"{' and '.join(TASK_TYPES)}")
        if not isinstance(addresses, list) or not addresses:
            raise UserError(f"TF_CONFIG cluster.{task_type}: expected a non-empty list of \"host:port\" addresses")
        for address in addresses:
            host, _, port = address.rpartition(":") if isinstance(address, str) else ("", "", "")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise UserError(f"TF_CONFIG cluster.{task_type}: {address!r} is not a \"host:port\" address")
    if len(cluster.get("chief", [])) > 1:
        raise UserError(f"TF_CONFIG cluster.chief: expected at most one chief, got {len(cluster['chief'])}")
    everyone = [address for addresses in cluster.values() for address in addresses]
    if len(set(everyone)) != len(everyone):
        raise UserError("TF_CONFIG cluster: an address is listed twice")
    task = config.get("task")
    if not isinstance(task, dict):
        raise UserError("TF_CONFIG task: expected an object {\"type\": \"worker\", \"index\": N}")
    task_type = task.get("type")
    if task_type not in cluster:
        raise UserError(f"TF_CONFIG task.type {task_type!r}: expected one of the cluster's task types ({', '.join(cluster)})")
    index = task.get("index")
    if isinstance(index, bool) or not isinstance(index, int):
        written = f"the string {json.dumps(index)}" if isinstance(index, str) else "missing" if index is None else json.dumps(index)
        hint = ", without quotes" if isinstance(index, str) else ""
        raise UserError(f"TF_CONFIG task.index {written}: expected a whole number from 0 to {len(cluster[task_type]) - 1}{hint}")
    if not 0 <= index < len(cluster[task_type]):
        raise UserError(f"TF_CONFIG task.index {index!r}: expected 0 to {len(cluster[task_type]) - 1} (cluster.{task_type} has "
                f"{len(cluster[task_type])} addresses)")
    return config


def is_chief(tf_config: dict | None) -> bool:
    """Whether this task writes the results: the chief, or worker 0 of a cluster without one
    (TensorFlow's rule). Without TF_CONFIG (one process), always."""
    if tf_config is None:
        return True
    task = tf_config["task"]
    if task["type"] == "chief":
        return True
    return task["type"] == "worker" and task["index"] == 0 and "chief" not in tf_config["cluster"]


def make_strategy(mode: str):
    """The strategy for `mode` ("mirrored" or "multiworker"); TensorFlow must not have
    initialised its devices yet for multiworker (create it first thing)."""
    import tensorflow as tf

    if mode == "multiworker":
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
        patch_keras_multiworker_logs()
    elif mode == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        if gpus:
            strategy = tf.distribute.MirroredStrategy()
        else:
            cpus = [device.name for device in tf.config.list_logical_devices("CPU")]
            logger.warning(
                "--distribute mirrored: no GPU found, training runs on the CPU (%d device%s)",
                len(cpus), "" if len(cpus) == 1 else "s",
            )
            strategy = tf.distribute.MirroredStrategy(devices=cpus)
    else:
        raise UserError(f"--distribute {mode}: no strategy to make (expected mirrored or multiworker)")
    logger.info("--distribute %s: %d replicas in sync", mode, strategy.num_replicas_in_sync)
    return strategy


def shard_by_data(dataset):
    """The dataset with tf.data's auto-shard policy DATA: every worker reads the whole (in-memory)
    dataset and keeps its share of the elements, rather than sharding by file."""
    import tensorflow as tf

    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


def build_before_fit(model, strategy, images) -> None:
    """Build a compiled model's metrics now, under `strategy`, from one in-memory image; and, for
    MultiWorkerMirroredStrategy, skip the build Keras would do at the start of fit/evaluate.

    Keras 3.15 builds a model under a strategy from the first batch of the distributed dataset,
    reduced with strategy.reduce; MultiWorkerMirroredStrategy's reduce cannot take that per-replica
    batch ("Attempt to convert a value (PerReplica ...)"), so fit fails before the first step.
    Building from a plain batch first leaves nothing for that step to do.
    """
    import tensorflow as tf

    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return
    batch = images[:1]
    with strategy.scope():
        model._symbolic_build(data_batch=(batch, batch))
    model._maybe_symbolic_build = lambda iterator=None, data_batch=None: None


def patch_keras_multiworker_logs() -> None:
    """Let Keras 3.15's fit/evaluate reduce their per-step logs under MultiWorkerMirroredStrategy.

    Keras reduces the logs (scalar metric results, already synchronised across replicas) with
    strategy.reduce("MEAN", value, axis=0), which fails on a scalar ("Invalid reduction dimension
    0 for input with 0 dimensions"). Scalars are reduced with axis=None instead; everything else
    (predict's "concat") goes to Keras's own function. Applied only for --distribute multiworker.
    """
    import tensorflow as tf
    from keras.src.backend.tensorflow import trainer

    original = getattr(trainer.reduce_per_replica, "keras_original", trainer.reduce_per_replica)

    def reduce_per_replica(values, strategy, reduction):
        if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) and reduction in ("auto", "mean"):
            def reduce(value):
                if isinstance(value, tf.distribute.DistributedValues) or tf.is_tensor(value):
                    axis = None if value.shape.rank == 0 else 0
                    return strategy.reduce("MEAN", value, axis=axis)
                return value

            return tf.nest.map_structure(reduce, values)
        return original(values, strategy, reduction)

    reduce_per_replica.keras_original = original
    trainer.reduce_per_replica = reduce_per_replica
