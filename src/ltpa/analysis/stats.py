"""The built-in LTPA statistics, vectorized over a block of centers at once.

A block is every scan's patterns at B centers as flat entries ``(row, scan, conn, count)``
(``StudyPatterns.block``); each statistic turns it into one or more maps of B values with
``bincount``s, one sort and (for permutations) matrix products, never a loop over centers.
With S scans and ``m = min_tracks``:

- ``coverage``: number of scans whose sphere holds >= m streamlines (any id);
- ``streamlines``: mean over the S scans of the distinct streamlines of the sphere;
- ``connections``: mean over the S scans of the number of ids != 0 with >= m streamlines;
- ``similarity``: mean pairwise cosine similarity of the scans' pattern vectors (ids != 0,
  counts >= m); scans whose vector is empty are left out; with the unit vectors u_s of the
  n scans left, (|sum u_s|^2 - n) / (n (n - 1)); NaN when n < 2. When scans share a
  ``subject_id``, also ``within_subject`` (mean over pairs of scans of one subject) and
  ``between_subject`` (pairs of different subjects): per subject g, sum_g (|sum_{s in g}
  u_s|^2 - n_g) / 2 is the sum of its pairs' cosines;
- ``group_difference``: Welch's t of one connection's per-scan counts x between
  ``groups=(A, B)``: (mean_B - mean_A) / sqrt(var_A / n_A + var_B / n_B) (sample variances),
  at centers where >= ``min_scans`` of the two groups' scans have x >= m (default: half of
  them, rounded up), NaN elsewhere and where both variances are 0. With
  ``n_permutations`` (and ``seed``): the group labels are permuted (sizes kept),
  per permutation the maximum |t| over the tested centers, and ``p_fwe`` of a center is
  (1 + #{permutations whose maximum >= |t|}) / (1 + n_permutations).
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import InputError
from .matrix import StudyPatterns

PERMUTATION_ELEMENTS = 1 << 22  # tested centers x permutations per matrix product


class Block:
    """Every scan's entries at ``n`` centers (see ``StudyPatterns.block``)."""

    def __init__(self, n, row, scan, conn, count):
        self.n = int(n)
        self.row, self.scan, self.conn, self.count = row, scan, conn, count


class StudyFacts:
    """What a statistic's options are checked against before any pattern is read.

    The scans' ``scan_ids``, ``scan_groups`` and ``subject_ids`` (JSON order) and the atlas's
    ``regions`` (sorted region ids, or None) and ``start`` (the first connection id, or
    None): what ``run_ltpa`` knows of a ``TrackDataSource`` without its patterns, so that a
    bad group, connection or option is an error before a scan's patterns are computed.
    A ``StudyPatterns`` has the same attributes.
    """

    def __init__(self, scan_ids, scan_groups, subject_ids, regions=None, start=None):
        self.scan_ids = list(scan_ids)
        self.scan_groups = list(scan_groups)
        self.subject_ids = list(subject_ids)
        self.regions = regions
        self.start = start

    @classmethod
    def of_source(cls, source) -> StudyFacts:
        """The facts of a ``TrackDataSource`` with its atlas selected (no pattern read).

        Parameters
        ----------
        source : TrackDataSource
            The study, with its atlas selected (``change_atlas``).

        Returns
        -------
        StudyFacts
            Its scans' ids, groups and subject ids (JSON order), and the first scan's region
            list and numbering base.

        Raises
        ------
        LtpaError
            If no atlas is selected, or the first scan's npy cannot be decoded.
        InputError
            The kind of the above when no atlas is selected, or the npy has no sidecar and
            its entry gives no usable region list.
        DamagedFileError
            If the npy's sidecar holds a region list that was edited.
        """
        labels = source._require_atlas()
        regions, start = source._decoding(0, labels[0])
        return cls(source.scan_ids, [rec.scan_group for rec in source._scans],
                   source.scans.column("subject_id"), regions, start)


class Stat:
    """A statistic: ``maps`` it makes, ``block(b)`` -> {map: (b.n,) values}, ``finish``.

    Made from a ``StudyPatterns``, or from the ``StudyFacts`` of the study before its
    patterns are read (then ``bind`` them before the first block).
    """

    name = ""
    options = ()

    def __init__(self, sp: StudyPatterns | StudyFacts, min_tracks: int):
        self.sp = sp
        self.min_tracks = int(min_tracks)
        self.n_scans = len(sp.scan_ids)

    def bind(self, sp: StudyPatterns) -> None:
        """Use the study's patterns ``sp`` (of the scans the statistic was made for).

        Parameters
        ----------
        sp : StudyPatterns
            The patterns the blocks will come from; its ``scan_ids`` must equal those the
            statistic was made with.

        Raises
        ------
        InputError
            If ``sp`` holds other scans than those the statistic was made for.
        """
        if list(sp.scan_ids) != list(self.sp.scan_ids):
            raise InputError(f"statistic {self.name!r} was set up for scans "
                             f"{self.sp.scan_ids[:5]}..., the patterns are of "
                             f"{list(sp.scan_ids)[:5]}...")
        self.sp = sp

    @property
    def maps(self) -> tuple:
        """Names of the maps the statistic makes; in the base class its ``name`` alone."""
        return (self.name,)

    def block(self, b: Block) -> dict:
        """The statistic's maps at one block of centers.

        Parameters
        ----------
        b : Block
            Every scan's entries at ``b.n`` centers.

        Returns
        -------
        dict
            Map name -> (b.n,) values, one per center of the block.

        Raises
        ------
        NotImplementedError
            Always, in the base class: each statistic defines its own.
        """
        raise NotImplementedError

    def finish(self, values: dict) -> dict:
        """Maps made once every block is done (e.g. ``p_fwe``); the ``values`` so far.

        Parameters
        ----------
        values : dict
            Map name -> (N,) values at every center, as the blocks made them.

        Returns
        -------
        dict
            Map name -> (N,) values of the maps made here; ``{}`` in the base class.
        """
        return {}

    def describe(self) -> dict:
        """The statistic's options, as a map's meta records them; none in the base class.

        Returns
        -------
        dict
            Option name -> value; ``{}`` in the base class.
        """
        return {}

    # helpers
    def totals(self, b: Block) -> np.ndarray:
        """(n, S) distinct streamlines per center and scan.

        Parameters
        ----------
        b : Block
            Every scan's entries at ``b.n`` centers.

        Returns
        -------
        numpy.ndarray
            (b.n, S) float64: per center and scan the sum of its counts over every
            connection id (0 included; ``min_tracks`` not applied).
        """
        s = self.n_scans
        return np.bincount(b.row * s + b.scan, weights=b.count,
                           minlength=b.n * s).reshape(b.n, s)


class Coverage(Stat):
    """``coverage``: the number of scans whose sphere holds >= ``min_tracks`` streamlines.

    The streamlines of a scan are its distinct streamlines of any connection id (0
    included) at the center.
    """

    name = "coverage"

    def block(self, b):
        """The number of such scans per center of the block.

        Parameters
        ----------
        b : Block
            Every scan's entries at ``b.n`` centers.

        Returns
        -------
        dict
            ``{"coverage": (b.n,) float64}``: whole numbers 0..S.
        """
        return {self.name: (self.totals(b) >= self.min_tracks).sum(axis=1).astype(np.float64)}


class Streamlines(Stat):
    """``streamlines``: the mean over the S scans of the distinct streamlines of the sphere.

    Every id counts (0 included) and ``min_tracks`` is not applied.
    """

    name = "streamlines"

    def block(self, b):
        """The mean streamlines per center of the block.

        Parameters
        ----------
        b : Block
            Every scan's entries at ``b.n`` centers.

        Returns
        -------
        dict
            ``{"streamlines": (b.n,) float64}``: total over the scans divided by S.
        """
        return {self.name: self.totals(b).sum(axis=1) / self.n_scans}


class Connections(Stat):
    """``connections``: the mean over the S scans of the ids != 0 with >= ``min_tracks``
    streamlines in the sphere."""

    name = "connections"

    def block(self, b):
        """The mean number of such connection ids per center of the block.

        Parameters
        ----------
        b : Block
            Every scan's entries at ``b.n`` centers.

        Returns
        -------
        dict
            ``{"connections": (b.n,) float64}``: the kept (scan, id) entries of the center,
            divided by S.
        """
        kept = (b.conn != 0) & (b.count >= self.min_tracks)
        return {self.name: np.bincount(b.row[kept], minlength=b.n) / self.n_scans}


def _subject_codes(subject_ids) -> tuple:
    """Per scan a subject number (a scan without subject_id is a subject of its own) and
    whether any two scans share one."""
    codes, seen = [], {}
    for pos, sid in enumerate(subject_ids):
        key = ("id", sid) if sid is not None else ("scan", pos)
        codes.append(seen.setdefault(key, len(seen)))
    codes = np.asarray(codes, dtype=np.int64)
    return codes, len(seen), len(seen) < len(codes)


class Similarity(Stat):
    """``similarity``: mean pairwise cosine similarity of the scans' pattern vectors.

    A scan's vector holds its counts of the ids != 0 with >= ``min_tracks`` streamlines;
    scans whose vector is empty are left out. When two or more scans share a
    ``subject_id`` (a scan without one is a subject of its own), also ``within_subject``
    and ``between_subject``: the mean over the pairs of one subject and of different
    subjects.

    Parameters
    ----------
    sp : StudyPatterns or StudyFacts
        The study's patterns, or its facts (its scans and their ``subject_ids``).
    min_tracks : int
        Counts below it are left out of the vectors.
    only : str or None
        One map to make alone (``within_subject`` or ``between_subject``, as ``make_stat``
        passes the name asked for); None: every map the study allows.

    Raises
    ------
    InputError
        If ``only`` is given and no two scans share a ``subject_id``.
    """

    name = "similarity"

    def __init__(self, sp, min_tracks, only=None):
        super().__init__(sp, min_tracks)
        self.subject, self.n_subjects, self.repeats = _subject_codes(sp.subject_ids)
        self.only = only
        if only is not None and not self.repeats:
            raise InputError(f"stat {only!r} needs repeat scans: no two scans share a "
                             f"subject_id")

    @property
    def maps(self):
        """``(only,)``; else ``similarity``, with ``within_subject`` and ``between_subject``
        when scans repeat."""
        if self.only is not None:
            return (self.only,)
        if self.repeats:
            return ("similarity", "within_subject", "between_subject")
        return ("similarity",)

    def block(self, b):
        """The mean cosine similarities per center of the block.

        Parameters
        ----------
        b : Block
            Every scan's entries at ``b.n`` centers.

        Returns
        -------
        dict
            Map name -> (b.n,) float64, the maps of ``maps``. ``similarity`` is NaN where
            fewer than 2 scans have a non-empty vector; ``within_subject`` where no two
            such scans share a subject; ``between_subject`` where no two such scans are of
            different subjects.
        """
        s = self.n_scans
        keep = (b.conn != 0) & (b.count >= self.min_tracks)
        row, scan, conn = b.row[keep], b.scan[keep], b.conn[keep]
        x = b.count[keep].astype(np.float64)
        rs = row * s + scan
        norm2 = np.bincount(rs, weights=x * x, minlength=b.n * s)
        u = x / np.sqrt(norm2[rs])
        n = (norm2.reshape(b.n, s) > 0).sum(axis=1).astype(np.float64)
        n_ids = int(conn.max()) + 1 if conn.shape[0] else 1
        total = _sum_sq_of_sums(row * n_ids + conn, u, row, b.n)
        pairs = n * (n - 1) / 2
        whole = (total - n) / 2  # sum of the cosines of every pair
        out = {}
        with np.errstate(invalid="ignore", divide="ignore"):
            out["similarity"] = np.where(n >= 2, whole / pairs, np.nan)
            if self.repeats:
                g = self.n_subjects
                sub = self.subject[scan]
                per = _sum_sq_of_sums((row * g + sub) * n_ids + conn, u, row * g + sub,
                                      b.n * g)
                present = norm2.reshape(b.n, s) > 0
                n_g = np.zeros((b.n, g))
                np.add.at(n_g, (np.nonzero(present)[0], self.subject[np.nonzero(present)[1]]),
                          1.0)
                within_sum = ((per.reshape(b.n, g) - n_g) / 2).sum(axis=1)
                within_pairs = (n_g * (n_g - 1) / 2).sum(axis=1)
                between_pairs = pairs - within_pairs
                out["within_subject"] = np.where(within_pairs > 0, within_sum / within_pairs,
                                                 np.nan)
                out["between_subject"] = np.where(between_pairs > 0,
                                                  (whole - within_sum) / between_pairs, np.nan)
        if self.only is not None:
            return {self.only: out[self.only]}
        return out


def _sum_sq_of_sums(key, weights, owner, n_owners) -> np.ndarray:
    """Per owner, the sum over its keys of (sum of the weights of the key)^2."""
    if key.shape[0] == 0:
        return np.zeros(n_owners)
    uniq, inv = np.unique(key, return_inverse=True)
    sums = np.bincount(inv, weights=weights)
    owner_of = np.zeros(uniq.shape[0], dtype=np.int64)
    owner_of[inv] = owner
    return np.bincount(owner_of, weights=sums * sums, minlength=n_owners)


class GroupDifference(Stat):
    """``group_difference``: Welch's t of one connection's per-scan counts between two groups.

    t = (mean_B - mean_A) / sqrt(var_A / n_A + var_B / n_B) over the scans of the two
    groups, at the centers where at least ``min_scans`` of them have a count >=
    ``min_tracks``. The counts themselves are used as they are: ``min_tracks`` only
    chooses the centers tested. With ``n_permutations``, also the family-wise ``p_fwe``
    (see the module docstring). The permutations are drawn here, once.

    Parameters
    ----------
    sp : StudyPatterns or StudyFacts
        The study's patterns, or its facts (its scans and their ``scan_groups``).
    min_tracks : int
        The count a scan needs at a center to count towards ``min_scans``.
    connection : optional
        The connection as given (an id or a pair of regions); kept, not read: the id
        used is ``connection_id``.
    groups : (A, B)
        Two different ``scan_group`` values of the study, each with 2 or more scans.
    min_scans : int, optional
        Scans of the two groups that must reach ``min_tracks`` at a tested center,
        1..n_A + n_B (default: half of them, rounded up).
    n_permutations : int
        Permutations of the group labels (sizes kept) for ``p_fwe``; 0: none.
    seed : optional
        Seed of ``numpy.random.default_rng`` for the permutations.
    connection_id : int
        The connection id tested (``run_ltpa`` resolves it from ``connection``).

    Raises
    ------
    InputError
        If ``connection_id`` is None; ``groups`` is not a pair of two different values;
        a group is not a ``scan_group`` of the study or has fewer than 2 scans;
        ``min_scans`` is not an integer in 1..n_A + n_B; ``n_permutations`` is not an
        integer >= 0.
    """

    name = "group_difference"
    options = ("connection", "groups", "min_scans", "n_permutations", "seed")

    def __init__(self, sp, min_tracks, connection=None, groups=None, min_scans=None,
                 n_permutations=0, seed=0, connection_id=None):
        super().__init__(sp, min_tracks)
        if connection_id is None:
            raise InputError("stat 'group_difference' needs connection= (an id, or a pair of "
                             "region names or numbers)")
        self.connection = int(connection_id)
        self.connection_given = connection
        if groups is None or isinstance(groups, str) or len(groups) != 2:
            raise InputError(f"stat 'group_difference' needs groups=(A, B), two scan_group "
                             f"values; got {groups!r}")
        found = {}
        for g in sp.scan_groups:
            found[g] = found.get(g, 0) + 1
        listed = ", ".join(f"{g!r} ({n} scans)" for g, n in found.items())
        a, b = groups
        if a == b:
            raise InputError(f"groups ({a!r}, {b!r}): the two groups must differ")
        for g in (a, b):
            if g not in found:
                raise InputError(f"group {g!r} is not a scan_group of the study; its groups: "
                                 f"{listed}")
            if found[g] < 2:
                raise InputError(f"group {g!r} has {found[g]} scan; Welch's t needs at least 2 "
                                 f"per group (groups: {listed})")
        self.groups = (a, b)
        labels = np.asarray([1 if g == a else 2 if g == b else 0 for g in sp.scan_groups])
        self.members = np.flatnonzero(labels > 0)  # scans in A or B, JSON order
        self.in_b = (labels[self.members] == 2).astype(np.float64)
        self.col_of_scan = np.full(self.n_scans, -1, dtype=np.int64)
        self.col_of_scan[self.members] = np.arange(self.members.shape[0])
        n_ab = self.members.shape[0]
        if min_scans is None:
            min_scans = math.ceil(n_ab / 2)
        if not isinstance(min_scans, (int, np.integer)) or isinstance(min_scans, bool) or \
                not 1 <= int(min_scans) <= n_ab:
            raise InputError(f"min_scans {min_scans!r}: expected an integer in 1..{n_ab} (the "
                             f"scans of the two groups)")
        self.min_scans = int(min_scans)
        if not isinstance(n_permutations, (int, np.integer)) or isinstance(n_permutations,
                                                                           bool) \
                or int(n_permutations) < 0:
            raise InputError(f"n_permutations {n_permutations!r}: expected an integer >= 0")
        self.n_permutations = int(n_permutations)
        self.seed = seed
        self.perm = None
        self.max_null = None
        if self.n_permutations:
            rng = np.random.default_rng(seed)
            self.perm = np.empty((n_ab, self.n_permutations))
            for k in range(self.n_permutations):
                self.perm[:, k] = rng.permutation(self.in_b)
            self.max_null = np.zeros(self.n_permutations)

    @property
    def maps(self):
        """``group_difference``, and ``p_fwe`` with permutations."""
        return ("group_difference", "p_fwe") if self.n_permutations else ("group_difference",)

    def describe(self):
        """The test's options, as a map's meta records them.

        Returns
        -------
        dict
            ``connection`` (the id), ``connection_regions`` (its two region names),
            ``groups``, ``min_scans``, ``n_permutations``, ``seed`` and ``n_scans`` (per
            group, keyed by the group as text).
        """
        names = self.sp.pair_names([self.connection])[0]
        return {"connection": self.connection, "connection_regions": list(names),
                "groups": list(self.groups), "min_scans": self.min_scans,
                "n_permutations": self.n_permutations, "seed": self.seed,
                "n_scans": {str(g): int(((self.in_b == 1) if g == self.groups[1]
                                         else (self.in_b == 0)).sum()) for g in self.groups}}

    def counts(self, b: Block) -> np.ndarray:
        """(n, n_AB) counts of the connection per center and scan of the two groups.

        Parameters
        ----------
        b : Block
            Every scan's entries at ``b.n`` centers.

        Returns
        -------
        numpy.ndarray
            (b.n, n_AB) float64: column ``j`` is the scan ``members[j]`` (the scans of A and
            B in JSON order); 0 where the scan has no entry of the connection.
        """
        x = np.zeros((b.n, self.members.shape[0]))
        sel = (b.conn == self.connection) & (self.col_of_scan[b.scan] >= 0)
        x[b.row[sel], self.col_of_scan[b.scan[sel]]] = b.count[sel]
        return x

    def block(self, b):
        """Welch's t per center of the block.

        With permutations, also updates each permutation's maximum |t| with the block's
        tested centers (kept for ``finish``).

        Parameters
        ----------
        b : Block
            Every scan's entries at ``b.n`` centers.

        Returns
        -------
        dict
            ``{"group_difference": (b.n,) float64}``, NaN at the centers not tested and
            where both groups' variances are 0.
        """
        x = self.counts(b)
        tested = (x >= self.min_tracks).sum(axis=1) >= self.min_scans
        t = np.full(b.n, np.nan)
        xt = x[tested]
        t[tested] = welch_from_sums(xt.sum(1), (xt * xt).sum(1), xt @ self.in_b,
                                    (xt * xt) @ self.in_b, self.in_b.sum(), xt.shape[1])
        if self.n_permutations and xt.shape[0]:
            s1, s2 = xt.sum(1)[:, None], (xt * xt).sum(1)[:, None]
            n_b = self.in_b.sum()
            step = max(1, PERMUTATION_ELEMENTS // xt.shape[0])
            for lo in range(0, self.n_permutations, step):
                p = self.perm[:, lo:lo + step]
                tp = welch_from_sums(s1, s2, xt @ p, (xt * xt) @ p, n_b, xt.shape[1])
                m = np.nanmax(np.abs(np.where(np.isnan(tp), 0.0, tp)), axis=0)
                self.max_null[lo:lo + step] = np.maximum(self.max_null[lo:lo + step], m)
        return {"group_difference": t}

    def finish(self, values):
        """The family-wise p of every center, from the permutations' maxima.

        Parameters
        ----------
        values : dict
            The maps so far; ``values["group_difference"]`` holds t at every center.

        Returns
        -------
        dict
            ``{"p_fwe": (N,) float64}``: (1 + #{permutations whose maximum |t| >= |t|}) /
            (1 + n_permutations), NaN where t is NaN; ``{}`` without permutations.
        """
        if not self.n_permutations:
            return {}
        t = values["group_difference"]
        p = np.full(t.shape[0], np.nan)
        ok = ~np.isnan(t)
        null = np.sort(self.max_null)
        exceed = null.shape[0] - np.searchsorted(null, np.abs(t[ok]), side="left")
        p[ok] = (1.0 + exceed) / (1.0 + self.n_permutations)
        return {"p_fwe": p}


def welch_from_sums(s_all, q_all, s_b, q_b, n_b, n_all):
    """Welch's t (mean_B - mean_A) from the sums and sums of squares of all and of B.

    Counts are integers, so ``n * q - s^2`` (n - 1 times n times the variance) is exact in
    float64; t is NaN where both variances are 0.

    Parameters
    ----------
    s_all : numpy.ndarray or float
        Sum of the values of every scan of A and B.
    q_all : numpy.ndarray or float
        Sum of their squares.
    s_b : numpy.ndarray or float
        Sum of the values of the scans of B.
    q_b : numpy.ndarray or float
        Sum of their squares.
    n_b : float
        Number of scans in B.
    n_all : int or float
        Number of scans in A and B.

    Returns
    -------
    numpy.ndarray
        float64 t of the broadcast shape of the sums; NaN where the squared standard error
        is not positive (both variances 0) or not a number (a group of fewer than 2).
    """
    n_a = n_all - n_b
    s_a, q_a = s_all - s_b, q_all - q_b
    with np.errstate(invalid="ignore", divide="ignore"):
        var_a = (n_a * q_a - s_a * s_a) / (n_a * (n_a - 1))
        var_b = (n_b * q_b - s_b * s_b) / (n_b * (n_b - 1))
        se2 = var_a / n_a + var_b / n_b
        t = (s_b / n_b - s_a / n_a) / np.sqrt(se2)
    return np.where(se2 > 0, t, np.nan)


STATS = {"coverage": Coverage, "streamlines": Streamlines, "connections": Connections,
         "similarity": Similarity, "within_subject": Similarity,
         "between_subject": Similarity, "group_difference": GroupDifference}


def make_stat(name, sp: StudyPatterns | StudyFacts, min_tracks, options: dict,
              connection_id=None) -> Stat:
    """The statistic ``name`` with its options; LtpaError for an unknown name or option.

    ``sp``: the study's patterns, or its ``StudyFacts`` (every option is checked against them
    alone; ``Stat.bind`` the patterns before the first block).

    Parameters
    ----------
    name : str
        A key of ``STATS``; ``within_subject`` and ``between_subject`` make a
        ``Similarity`` of that map alone.
    sp : StudyPatterns or StudyFacts
        The study the statistic is for.
    min_tracks : int
        dsi2's aggregator option, as ``run_ltpa``'s.
    options : dict
        The statistic's options (``group_difference``: ``connection``, ``groups``,
        ``min_scans``, ``n_permutations``, ``seed``; the others take none).
    connection_id : int, optional
        The connection id ``group_difference`` tests (``run_ltpa`` resolves it from
        ``options["connection"]``); not used by the others.

    Returns
    -------
    Stat
        The statistic, ready for ``bind`` (when made from ``StudyFacts``) and ``block``.

    Raises
    ------
    InputError
        If ``name`` is not a built-in statistic or an option is not one of its options;
        ``within_subject`` / ``between_subject`` when no two scans share a ``subject_id``;
        ``group_difference`` with no connection, bad ``groups``, ``min_scans`` or
        ``n_permutations`` (see ``GroupDifference``).
    """
    cls = STATS.get(name)
    if cls is None:
        raise InputError(f"unknown statistic {name!r}; the built-in ones: "
                         f"{', '.join(STATS)} (or pass a function of a PatternMatrix)")
    unknown = sorted(set(options) - set(cls.options))
    if unknown:
        allowed = ", ".join(cls.options) if cls.options else "none"
        raise InputError(f"statistic {name!r} takes no option {', '.join(map(repr, unknown))} "
                         f"(its options: {allowed})")
    if cls is Similarity:
        return Similarity(sp, min_tracks, only=None if name == "similarity" else name)
    if cls is GroupDifference:
        return GroupDifference(sp, min_tracks, connection_id=connection_id, **options)
    return cls(sp, min_tracks)
