"""``ml/encoders`` reads no configuration: the folder converted models go to comes from the caller."""

import pytest

from ecom_pipeline.ml.encoders.registry import packaged_text_dir, required_models_dir


def test_models_dir_is_the_callers_and_has_no_hidden_default(tmp_path):
    assert required_models_dir(tmp_path, "x") == tmp_path
    with pytest.raises(ValueError, match="needs models_dir"):
        packaged_text_dir("multilingual-e5-small", None)
    # a model shipped as a ready folder needs no conversion, so no models_dir
    folder, version = packaged_text_dir("all-minilm-l6-v2", None)
    assert folder.is_dir() and version
