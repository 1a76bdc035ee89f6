"""Datasets: the synthetic VOC-style benchmark, VOC 2012 (+SBD) and COCO 2014 in VOC layout."""
