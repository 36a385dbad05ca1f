"""The prepared data: the voxel index (pkl), endpoint labels (npy), scalars, b0 atlas maps, and
the safe loader of the pkl."""
