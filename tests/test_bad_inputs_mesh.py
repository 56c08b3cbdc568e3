"""Bad inputs to boundary conditions and meshes fail clearly instead of giving a silently wrong result
(issue 13, items 1, 3 and the mesh files of 16): DirichletBC keeps each value with its dof, coincident
unmerged vertices (a hidden slit) and repeated cells are detected when a mesh is built or read, and unreadable
mesh files raise an igax error that names the file and what was expected, with the reader's exception chained.

Each row of the table: (what is wrong, the bad call, the exception type, a regex that names the argument).
"""

import itertools

import jax
import jax.numpy as jnp
import meshio
import numpy as np
import pytest
from scipy.spatial import cKDTree

from igax import fem
from igax.fem.mesh import Mesh, MeshReadError, box_mesh, rectangle_mesh, unit_cube, unit_square
from igax.fem.mesh import duplicates as mesh_duplicates

P1 = fem.LagrangeSpace(unit_square(2), degree=1)  # 9 dofs
P1V = fem.LagrangeSpace(unit_square(2), degree=1, shape=(2,))  # 18 dofs, component-major


# ---------------------------------------------------------------------------------------------- meshes
def slit_square(n: int = 4) -> tuple[Mesh, np.ndarray, np.ndarray]:
    """unit_square(n) cut along x = 1/2: the cells right of it use copies of the vertices on the line."""
    base = unit_square(n)
    on_line = np.flatnonzero(np.isclose(base.points[:, 0], 0.5))
    copy = np.full(base.npoints, -1)
    copy[on_line] = base.npoints + np.arange(len(on_line))
    points = np.concatenate([base.points, base.points[on_line]])
    cells = np.array(base.cells)
    right = base.cell_centroids()[0] > 0.5
    sub = cells[right]
    cells[right] = np.where(copy[sub] >= 0, copy[sub], sub)
    return base, points, cells


def _ring(n: int = 12, seam_copy: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Quads of an annulus, 1 <= r <= 2, closed on itself by index (a periodic direction), or with the seam
    vertices stored twice (angle 0 and 2 pi: a hidden slit)."""
    m = n + 1 if seam_copy else n
    t = 2 * np.pi * np.arange(m) / n
    points = np.concatenate([np.c_[np.cos(t), np.sin(t)], 2 * np.c_[np.cos(t), np.sin(t)]])
    k = np.arange(n)
    k1 = k + 1 if seam_copy else (k + 1) % n
    return points, np.stack([k, m + k, m + k1, k1], axis=1)


def _write(tmp, name: str, text: str | bytes) -> str:
    path = tmp / name
    (path.write_bytes if isinstance(text, bytes) else path.write_text)(text)
    return str(path)


NO_CELLS_MSH = "$MeshFormat\n2.2 0 8\n$EndMeshFormat\n$Nodes\n2\n1 0 0 0\n2 1 0 0\n$EndNodes\n"
NO_CELLS_MSH += "$Elements\n0\n$EndElements\n"
TRUNCATED_MSH = "$MeshFormat\n2.2 0 8\n$EndMeshFormat\n$Nodes\n3\n1 0 0 0\n"
SQUARE = unit_square(1, cell="quad")
TRI = unit_square(2)
HEX = box_mesh(n=(2, 1, 1), cell="hexahedron")

# ---------------------------------------------------------------------------------------------- the table
CASES = [
    # item 1: values are paired with the dofs of `where`; duplicates cannot be paired
    (
        "duplicate dofs with one value each",
        lambda tmp: fem.DirichletBC(P1, np.array([5, 3, 3]), jnp.array([50.0, 30.0, 10.0])),
        ValueError,
        r"DirichletBC: where contains duplicate dofs \[3\]; give each dof once",
    ),
    (
        "values of the wrong length",
        lambda tmp: fem.DirichletBC(P1, np.array([5, 3, 1]), jnp.array([1.0, 2.0])),
        ValueError,
        r"value must be .* an array of shape \(3,\)",
    ),
    (
        "Field of another value shape",
        lambda tmp: fem.DirichletBC(P1, "left", fem.Field(P1V, jnp.zeros(18))),
        ValueError,
        r"value is a Field of shape \(2,\) but the space has value shape \(\)",
    ),
    # item 3: a hidden slit, a cell listed twice
    (
        "coincident vertices used by cells (hidden slit)",
        lambda tmp: Mesh(*slit_square()[1:], "triangle"),
        ValueError,
        r"Mesh: points \d+ and \d+ coincide .* hidden slit .* Mesh\(\.\.\., merge_duplicates=True\)",
    ),
    (
        "annulus whose seam vertices are stored twice",
        lambda tmp: Mesh(*_ring(seam_copy=True), "quad"),
        ValueError,
        r"Mesh: points 0 and 12 coincide",
    ),
    (
        "a triangle listed twice, rotated",
        lambda tmp: Mesh(TRI.points, np.r_[TRI.cells, TRI.cells[[3]][:, [1, 2, 0]]], "triangle"),
        ValueError,
        r"Mesh: cells 3 and 8 have the same vertices \[.*\]: a cell listed twice",
    ),
    (
        "a quad listed twice (the issue's area 2 square)",
        lambda tmp: Mesh(SQUARE.points, np.r_[SQUARE.cells, SQUARE.cells[:, [2, 3, 0, 1]]], "quad"),
        ValueError,
        r"Mesh: cells 0 and 1 have the same vertices \[0, 1, 2, 3\]",
    ),
    (
        "a hexahedron listed twice",
        lambda tmp: Mesh(HEX.points, HEX.cells[[1, 0, 1]], "hexahedron"),
        ValueError,
        r"Mesh: cells 0 and 2 have the same vertices",
    ),
    (
        "a file with a hidden slit",
        lambda tmp: Mesh.read(_slit_file(tmp)),
        ValueError,
        r"'.*slit\.vtu': points \d+ and \d+ coincide .* Mesh\.read\(path, merge_duplicates=True\)",
    ),
    # item 16: files that are not meshes
    (
        "garbage .msh",
        lambda tmp: Mesh.read(_write(tmp, "junk.msh", b"hello\x00\x01\x02 not a mesh\n")),
        MeshReadError,
        r"could not read mesh file '.*junk\.msh' .*expected a gmsh mesh \(\.msh, format 2\.2 or 4\.x",
    ),
    (
        "truncated .msh",
        lambda tmp: Mesh.read(_write(tmp, "cut.msh", TRUNCATED_MSH)),
        MeshReadError,
        r"could not read mesh file '.*cut\.msh' \(as gmsh: ValueError: .*\); expected a gmsh mesh",
    ),
    (
        "empty .msh",
        lambda tmp: Mesh.read(_write(tmp, "empty.msh", "")),
        MeshReadError,
        r"'.*empty\.msh': the file is empty; expected a gmsh mesh",
    ),
    (
        "empty .xdmf",
        lambda tmp: Mesh.read(_write(tmp, "empty.xdmf", "")),
        MeshReadError,
        r"'.*empty\.xdmf': the file is empty; expected an XDMF file",
    ),
    (
        "blank .xdmf (not XML)",
        lambda tmp: Mesh.read(_write(tmp, "blank.xdmf", "\n \n")),
        MeshReadError,
        r"'.*blank\.xdmf': not valid XML .*expected an XDMF file",
    ),
    (
        "XDMF without a grid",
        lambda tmp: Mesh.read(_write(tmp, "nogrid.xdmf", '<Xdmf Version="3.0"><Domain/></Xdmf>')),
        MeshReadError,
        r"'.*nogrid\.xdmf': no grid with a Topology and a Geometry.*expected an XDMF file",
    ),
    (
        "XDMF with too few numbers",
        lambda tmp: Mesh.read(_write(tmp, "short.xdmf", _xdmf_short())),
        MeshReadError,
        r"'.*short\.xdmf': the XDMF Topology DataItem does not hold '1 3' numbers",
    ),
    (
        ".msh with nodes and no cells",
        lambda tmp: Mesh.read(_write(tmp, "nocells.msh", NO_CELLS_MSH)),
        MeshReadError,
        r"'.*nocells\.msh' holds no cells .*expected triangles or quadrilaterals",
    ),
    (
        "missing file",
        lambda tmp: Mesh.read(tmp / "missing.msh"),
        FileNotFoundError,
        r"mesh file '.*missing\.msh' does not exist .*expected a mesh file",
    ),
    (
        "a directory",
        lambda tmp: Mesh.read((tmp / "folder.msh").mkdir() or tmp / "folder.msh"),
        MeshReadError,
        r"'.*folder\.msh' is a directory; expected a mesh file",
    ),
    (
        "unknown extension",
        lambda tmp: Mesh.read(_write(tmp, "part.xyz", "1 2 3")),
        MeshReadError,
        r"'.*part\.xyz': the extension names no mesh format",
    ),
]


def _xdmf_short() -> str:
    return (
        '<Xdmf><Domain><Grid><Topology TopologyType="Triangle"><DataItem Dimensions="1 3">0 1</DataItem>'
        '</Topology><Geometry><DataItem Dimensions="3 2">0 0 1 0 0 1</DataItem></Geometry></Grid></Domain>'
        "</Xdmf>"
    )


def _slit_file(tmp) -> str:
    _, points, cells = slit_square(2)
    path = str(tmp / "slit.vtu")
    meshio.write(path, meshio.Mesh(np.c_[points, np.zeros(len(points))], [("triangle", cells)]))
    return path


@pytest.mark.parametrize("what, call, exc, match", CASES, ids=[c[0] for c in CASES])
def test_bad_input(what, call, exc, match, tmp_path, capfd):
    with pytest.raises(exc, match=match):
        call(tmp_path)
    out, err = capfd.readouterr()
    assert "Couldn't read" not in out + err  # meshio printed its failures and exited before


def test_read_errors_are_value_errors_with_the_cause_chained(tmp_path):
    # Callers that caught ValueError before still do; the reader's exception stays reachable.
    path = _write(tmp_path, "junk.msh", b"\x00garbage")
    with pytest.raises(ValueError) as info:
        Mesh.read(path)
    assert isinstance(info.value, MeshReadError)
    assert isinstance(info.value.__cause__, meshio.ReadError)
    with pytest.raises(MeshReadError) as info:
        Mesh.read(_write(tmp_path, "blank.xdmf", "<Xdmf"))
    assert type(info.value.__cause__).__name__ == "ParseError"


# ---------------------------------------------------------------------------------------------- item 1
def test_explicit_dofs_keep_their_values():
    bc = fem.DirichletBC(P1, np.array([5, 3, 1]), jnp.array([50.0, 30.0, 10.0]))
    x = bc.expand(jnp.zeros(P1.ndofs))
    np.testing.assert_array_equal(np.asarray(x[np.array([5, 3, 1])]), [50.0, 30.0, 10.0])
    np.testing.assert_array_equal(bc.dofs, [1, 3, 5])  # stored sorted, with the values carried along
    np.testing.assert_array_equal(np.asarray(bc.values), [10.0, 30.0, 50.0])
    # and the solve honours them
    A = fem.assemble(fem.library.laplace, P1)
    b = jnp.zeros(P1.ndofs)
    u = fem.solve(A, b, bc=bc)
    np.testing.assert_allclose(
        np.asarray(u.coeffs[np.array([5, 3, 1])]), [50.0, 30.0, 10.0], rtol=0, atol=1e-12
    )


def test_explicit_dofs_on_a_vector_space_keep_their_values():
    dofs = np.array([17, 0, 9, 4])  # component 1 of node 8, component 0 of node 0, ...
    vals = jnp.array([1.7, 0.0, 0.9, 0.4])
    x = fem.DirichletBC(P1V, dofs, vals).expand(jnp.full(P1V.ndofs, -1.0))
    np.testing.assert_array_equal(np.asarray(x[dofs]), np.asarray(vals))
    assert int((x == -1.0).sum()) == P1V.ndofs - 4


def test_repeated_dofs_with_one_value_for_all_are_merged():
    bc = fem.DirichletBC(P1, np.array([5, 3, 3, 5]), 2.0)  # e.g. two sides concatenated, sharing a corner
    np.testing.assert_array_equal(bc.dofs, [3, 5])
    np.testing.assert_array_equal(np.asarray(bc.values), [2.0, 2.0])


def test_callable_values_follow_their_dofs():
    g = lambda x: 10 * x[0] + x[1]  # noqa: E731
    where = np.array([8, 2, 6, 0])
    bc = fem.DirichletBC(P1, where, g)
    xy = P1.dof_coordinates()
    x = np.asarray(bc.expand(jnp.zeros(P1.ndofs)))
    np.testing.assert_allclose(x[where], 10 * xy[where, 0] + xy[where, 1], rtol=0, atol=1e-14)


def test_per_component_callable_values_on_a_vector_space():
    g = lambda x: jnp.stack([x[0] + 1.0, 2.0 * x[1] - 3.0])  # noqa: E731 - (ncomp, npts)
    ns = P1V.nscalar
    xy = P1V.dof_coordinates()
    for comp in (None, 1):
        bc = fem.DirichletBC(P1V, ["left", "top"], g, component=comp)
        x = np.asarray(bc.expand(jnp.zeros(P1V.ndofs)))
        c, s = bc.dofs // ns, bc.dofs % ns
        want = np.where(c == 0, xy[s, 0] + 1.0, 2.0 * xy[s, 1] - 3.0)
        np.testing.assert_allclose(x[bc.dofs], want, rtol=0, atol=1e-14)
        assert set(c.tolist()) == ({0, 1} if comp is None else {1})


def test_field_values():
    # The same space: the coefficients on the constrained dofs, exactly.
    u = fem.Field(P1, jnp.arange(P1.ndofs, dtype=float) ** 2)
    bc = fem.DirichletBC(P1, np.array([8, 0, 4]), u)
    np.testing.assert_array_equal(
        np.asarray(bc.expand(jnp.zeros(P1.ndofs))[np.array([8, 0, 4])]), [64.0, 0.0, 16.0]
    )
    # Another space (P2 on the same mesh): the field interpolated at the P2 boundary nodes.
    lin = fem.Field(
        P1, jnp.asarray(1.0 + 2.0 * P1.dof_coordinates()[:, 0] + 3.0 * P1.dof_coordinates()[:, 1])
    )
    P2 = fem.LagrangeSpace(unit_square(2), degree=2)
    bc = fem.DirichletBC(P2, "top", lin)
    xy = P2.dof_coordinates()[bc.dofs]
    np.testing.assert_allclose(
        np.asarray(bc.values), 1.0 + 2.0 * xy[:, 0] + 3.0 * xy[:, 1], rtol=0, atol=1e-12
    )
    # A vector Field on a vector space, all components.
    w = fem.Field(P1V, jnp.arange(P1V.ndofs, dtype=float))
    bc = fem.DirichletBC(P1V, "left", w)
    np.testing.assert_array_equal(np.asarray(bc.values), bc.dofs.astype(float))


def test_gradient_reaches_the_right_dofs():
    where = np.array([5, 3, 1])
    weights = jnp.arange(1.0, P1.ndofs + 1.0)  # dof d weighs d + 1

    def loss(vals):
        return jnp.dot(weights, fem.DirichletBC(P1, where, vals).expand(jnp.zeros(P1.ndofs)))

    g = jax.grad(loss)(jnp.array([50.0, 30.0, 10.0]))
    np.testing.assert_array_equal(np.asarray(g), [6.0, 4.0, 2.0])

    # through the elimination and the solve: compare with central differences
    A = fem.assemble(fem.library.laplace, P1)

    def solve_loss(vals):
        u = fem.solve(A, jnp.ones(P1.ndofs), bc=fem.DirichletBC(P1, np.array([8, 0, 2, 6]), vals))
        return u.coeffs[4] ** 2  # the centre dof, free

    v0 = jnp.array([1.0, -2.0, 0.5, 3.0])
    g = jax.grad(solve_loss)(v0)
    h = 1e-6
    fd = [(solve_loss(v0.at[i].add(h)) - solve_loss(v0.at[i].add(-h))) / (2 * h) for i in range(4)]
    np.testing.assert_allclose(np.asarray(g), np.asarray(fd), rtol=1e-6, atol=1e-9)


# ---------------------------------------------------------------------------------------------- item 3
def test_slit_is_found_and_merging_closes_it():
    base, points, cells = slit_square(4)
    with pytest.raises(ValueError, match=r"5 such pair\(s\)"):  # the 5 vertices on x = 1/2
        Mesh(points, cells, "triangle")
    slit = Mesh(points, cells, "triangle", check=False)  # a deliberate crack is still possible
    assert len(slit.boundary_facets()) == 16 + 2 * 4  # the slit's two sides are exterior facets
    for merged in (Mesh(points, cells, "triangle", merge_duplicates=True), slit.merge_duplicate_vertices()):
        assert merged.npoints == base.npoints
        np.testing.assert_array_equal(merged.points, base.points)  # copies were appended: ids unchanged
        np.testing.assert_array_equal(merged.cells, base.cells)
        assert len(merged.boundary_facets()) == 16
    assert base.merge_duplicate_vertices() is base


def test_slit_changes_the_solution_and_the_merge_restores_it():
    # The symptom: u(1/2, 1/2) of -lap u = 1, u = 0 on the boundary, is 0 across a hidden slit
    # (its sides are boundary); merged, it is the value on the intact mesh.
    base, points, cells = slit_square(4)

    def centre_value(mesh):
        V = fem.LagrangeSpace(mesh, degree=1)
        u = fem.solve(fem.assemble(fem.library.laplace, V), fem.assemble(fem.library.source, V, f=1.0),
                      bc=fem.DirichletBC(V, None, 0.0))  # fmt: skip
        centre = np.flatnonzero(np.all(np.isclose(mesh.points, 0.5), axis=1))
        return np.asarray(u.coeffs[centre])

    intact = centre_value(base)
    assert intact.shape == (1,) and intact[0] > 0.06
    np.testing.assert_array_equal(centre_value(Mesh(points, cells, "triangle", check=False)), [0.0, 0.0])
    np.testing.assert_allclose(centre_value(Mesh(points, cells, "triangle", merge_duplicates=True)), intact)


def test_merge_keeps_boundaries_and_chains_of_coincident_vertices():
    base = unit_square(2, cell="quad")  # 9 points, cells 2x2
    # three copies of the centre vertex 4, each used by one cell (a chain 4 ~ 9 ~ 10 ~ 11)
    points = np.concatenate(
        [base.points, np.repeat(base.points[[4]], 3, axis=0) + [[1e-13, 0], [0, 1e-13], [0, 0]]]
    )
    cells = np.array(base.cells)
    for k, c in enumerate((1, 2, 3)):
        cells[c][cells[c] == 4] = 9 + k
    m = Mesh(points, cells, "quad", base.boundaries, merge_duplicates=True)
    assert m.npoints == 9 and np.array_equal(m.cells, base.cells)
    for name in base.boundaries:
        np.testing.assert_array_equal(m.boundaries[name], base.boundaries[name])
    np.testing.assert_allclose(m.cell_volumes().sum(), 1.0)


def test_unused_and_periodic_vertices_are_not_flagged():
    base = unit_square(2)
    # an unused vertex on top of a used one (gmsh geometry points, a removed cell)
    Mesh(np.r_[base.points, base.points[[4]]], base.cells, "triangle")
    # a ring closed by index: no seam vertex is stored twice
    assert Mesh(*_ring(), "quad").ncells == 12
    # a short edge (ends closer than the tolerance but in one cell) is not a slit
    pts = np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 1e-12], [0.0, 1.0]])
    assert mesh_duplicates.coincident_vertex_pairs(pts, np.array([[0, 1, 2, 3]])).shape == (0, 2)


def test_tolerance_is_relative_to_the_mesh_size():
    # 1e-10 of the bounding-box diagonal (sqrt(2) x scale here): the 3 copies on x = 1/2 are found when moved
    # by less, whatever the size of the mesh, and not when moved by more.
    base, points, cells = slit_square(2)
    for scale, shift, found in [(1.0, 1e-13, 3), (1e6, 1e-5, 3), (1e-6, 1e-17, 3), (1.0, 1e-8, 0),
                                (1e6, 1e-3, 0), (1e-6, 1e-15, 0)]:  # fmt: skip
        p = points * scale
        p[base.npoints :, 1] += shift
        assert len(mesh_duplicates.coincident_vertex_pairs(p, cells)) == found, (scale, shift)


def test_binning_finds_every_pair_a_kd_tree_finds():
    # Random points plus near copies placed on and around the bin faces of the detector (the hard case),
    # against a brute-force reference (KD-tree, max-norm radius = the tolerance).
    rng = np.random.default_rng(1)
    for dim in (2, 3):
        corners = np.array(list(itertools.product((0.0, 1.0), repeat=dim)))
        x = np.concatenate([corners, rng.uniform(0, 1, (3000, dim))])
        tol = mesh_duplicates.REL_TOL * np.sqrt(dim)
        size = mesh_duplicates._BIN * np.sqrt(dim)
        faces = (np.arange(1, 60) - 0.5) * size  # bin faces of the detector (bins shifted by half a bin)
        base = rng.uniform(0, 1, (400, dim))
        base[:, rng.integers(dim)] = rng.choice(faces, 400)  # on a face along one axis
        base[:200] = faces[rng.integers(len(faces), size=(200, dim))]  # on a corner of faces
        near = base + rng.uniform(-0.9, 0.9, base.shape) * tol
        far = base + rng.choice([-1, 1], base.shape) * rng.uniform(1.1, 3.0, base.shape) * tol
        pts = np.concatenate([x, base, near, far])
        cells = np.arange(len(pts))[:, None]  # one "cell" per vertex: every vertex used, no shared cell
        got = mesh_duplicates.coincident_vertex_pairs(pts, cells)
        want = np.array(sorted(cKDTree(pts).query_pairs(tol, p=np.inf)))
        assert len(want) >= 400
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize(
    "mesh",
    [unit_square(5), unit_square((3, 4), diagonal="left"), unit_square(4, cell="quad"),
     rectangle_mesh((-1e5, 3.0), (1e5, 3.0 + 1e-3), n=(7, 2)), unit_cube(3), unit_cube(2, cell="hexahedron"),
     unit_square(3).refine(2), unit_cube(2).refine(1), unit_cube(2, cell="hexahedron").refine(1)],
    ids=["tri", "tri-left", "quad", "thin-offset", "tet", "hex", "tri-refined", "tet-refined", "hex-refined"],
)  # fmt: skip
def test_generated_and_refined_meshes_pass(mesh, tmp_path):
    mesh.check_duplicates()  # generators build trusted meshes: run the check they skip
    assert len(mesh_duplicates.coincident_vertex_pairs(mesh.points, mesh.cells)) == 0
    assert len(mesh_duplicates.repeated_cells(mesh.cells)) == 0
    mesh.write(tmp_path / "m.msh")
    again = Mesh.read(tmp_path / "m.msh")  # read back with every check on
    assert again.ncells == mesh.ncells and again.npoints == mesh.npoints


def test_read_merges_duplicates_with_their_point_data(tmp_path):
    base, points, cells = slit_square(2)
    u = points[:, 0] + 10 * points[:, 1]
    path = str(tmp_path / "slit.vtu")
    meshio.write(
        path, meshio.Mesh(np.c_[points, np.zeros(len(points))], [("triangle", cells)], point_data={"u": u})
    )
    mesh, pdata, _ = fem.read_mesh(path, merge_duplicates=True, with_data=True)
    assert mesh.npoints == base.npoints
    np.testing.assert_allclose(pdata["u"], mesh.points[:, 0] + 10 * mesh.points[:, 1])


def test_repeated_cells_are_found_in_any_vertex_order():
    cube = unit_cube(2)  # 48 tetrahedra
    for perm in itertools.permutations(range(4)):
        cells = np.r_[cube.cells, cube.cells[[7, 30]][:, list(perm)]]
        np.testing.assert_array_equal(mesh_duplicates.repeated_cells(cells), [[7, 48], [30, 49]])
    assert mesh_duplicates.repeated_cells(cube.cells).shape == (0, 2)


@pytest.mark.slow
def test_million_vertex_mesh_with_a_slit():
    # The size the check is built for (no timing assert: the figures are in Mesh.check_duplicates' docstring).
    n = 999
    base = unit_square(n)
    base.check_duplicates()
    on_line = np.flatnonzero(base.points[:, 0] == base.points[n // 2, 0])  # a column of vertices
    copy = np.full(base.npoints, -1)
    copy[on_line] = base.npoints + np.arange(len(on_line))
    cells = np.array(base.cells)
    right = base.cell_centroids()[0] > base.points[n // 2, 0]
    cells[right] = np.where(copy[cells[right]] >= 0, copy[cells[right]], cells[right])
    points = np.concatenate([base.points, base.points[on_line]])
    assert len(mesh_duplicates.coincident_vertex_pairs(points, cells)) == n + 1
    merged = Mesh(points, cells, "triangle", merge_duplicates=True)
    np.testing.assert_array_equal(merged.cells, base.cells)
