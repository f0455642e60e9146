"""Datalists, readers, validation, splits and the pretraining DataModule."""

from medssl.data.datalist import Item, describe_source, load_datalist
from medssl.data.readers import Header, LoadItemd, SimpleITKReader, image_readers, read_header
from medssl.data.splits import check_patient_leakage, split_train_val
from medssl.data.validation import DatalistError, Problem, check_datalist, find_problems

__all__ = [
    "DatalistError",
    "Header",
    "Item",
    "LoadItemd",
    "Problem",
    "SimpleITKReader",
    "check_datalist",
    "check_patient_leakage",
    "describe_source",
    "find_problems",
    "image_readers",
    "load_datalist",
    "read_header",
    "split_train_val",
]
