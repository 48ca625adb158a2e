"""Weight clustering with tfmot, sparsity-preserving when the model was pruned first."""

from __future__ import annotations

from edgert.converters.data import LabelledData
from edgert.converters.recipe import ClusterConfig, TrainConfig

DEFAULT_EPOCHS = 3
DEFAULT_LEARNING_RATE = 1e-4


def cluster(model, config: ClusterConfig, train: LabelledData | None, val: LabelledData | None,
            training: TrainConfig, probabilities: bool, preserve_sparsity: bool) -> tuple[object, list[str]]:
    """Cluster every clusterable layer's weights into `config.clusters` centroids; returns the stripped model."""
    import tensorflow_model_optimization as tfmot

    from edgert.converters.training import compile_for_labels, fit

    from tensorflow_model_optimization.python.core.clustering.keras import clusterable_layer, clustering_registry

    from edgert.converters.training import wrap_supported_layers

    ck = tfmot.clustering.keras

    def supported(layer):  # layers without weights have nothing to cluster and stay as they are
        return bool(layer.trainable_weights) and (isinstance(layer, clusterable_layer.ClusterableLayer)
                                                  or clustering_registry.ClusteringRegistry.supports(layer))

    clustered, notes = wrap_supported_layers(model, supported, lambda layer: ck.cluster_weights(
        layer, number_of_clusters=config.clusters, cluster_centroids_init=ck.CentroidInitialization.KMEANS_PLUS_PLUS,
        preserve_sparsity=preserve_sparsity), "clustered")
    if train is not None:
        compile_for_labels(clustered, probabilities, training.learning_rate or DEFAULT_LEARNING_RATE)
        fit(clustered, train, val, training.epochs or DEFAULT_EPOCHS, training.batch_size, desc="clustering")
    else:
        notes.append("no training data: weights clustered without fine-tuning")
    if preserve_sparsity:
        notes.append("sparsity-preserving clustering: pruned zeros stay zero")
    return ck.strip_clustering(clustered), notes
