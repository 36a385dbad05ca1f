"""Input files on disk: streamline files (.trk read and write, .trk.gz, .tck, .trx), voxel grids,
region lists."""
