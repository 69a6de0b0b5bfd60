"""A data.dir without a written dataset is a clear error."""

import pytest

from pstroke.data import tfds_builder
from pstroke.errors import UserError


def test_missing_dataset_folder_names_expected_path(tmp_path):
    with pytest.raises(UserError, match="shapes_trajectories/1.0.0"):
        tfds_builder.data_source(str(tmp_path / "nodata"), "1.0.0", "train")


def test_dataset_version_folder_is_not_the_data_dir(tmp_path):
    version_folder = tmp_path / "shapes_trajectories" / "1.0.0"
    version_folder.mkdir(parents=True)
    with pytest.raises(UserError, match="build_data"):
        tfds_builder.data_source(str(version_folder), "1.0.0", "train")
