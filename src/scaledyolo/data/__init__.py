"""Datasets: read (formats), check and cache (checks), augment (augment), batch (loader).

`dataset.load_data_config` parses the data YAML; `loader.create_dataloader` is what training and
validation use; `anchors.check_anchors` is autoanchor; `synthetic.make_synthetic_dataset` writes the
demo's shapes dataset; `report` backs `scaledyolo data`.
"""
