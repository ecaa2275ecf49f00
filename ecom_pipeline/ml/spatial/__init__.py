"""Spatial analysis: haversine distances, region tables, seller→customer flows, geographic kNN graph,
kNN features, GCN region embeddings and the delivery-delay model.  Framework-free (no Dagster)."""
