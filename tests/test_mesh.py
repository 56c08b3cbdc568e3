"""Meshes: generators, topology counts, orientation, quality check, boundary tags, meshio round trips."""

import numpy as np
import pytest

from igax.bases.lagrange import reference_element
from igax.fem.mesh import (
    Mesh,
    box_mesh,
    read_mesh,
    rectangle_mesh,
    unit_cube,
    unit_square,
    write_mesh,
    write_time_series,
)

# (generator, cells, points, edges, faces, boundary facets, facets per named side)
CASES = {
    "triangle": (lambda: unit_square((3, 2)), 12, 12, 23, None, 10),
    "quad": (lambda: unit_square((3, 2), cell="quad"), 6, 12, 17, None, 10),
    "tetra": (lambda: box_mesh(n=(2, 3, 4)), 144, 60, 255, 340, 104),
    "hexahedron": (lambda: box_mesh(n=(2, 3, 4), cell="hexahedron"), 24, 60, 133, 98, 52),
}


def euler(mesh):
    """V - E (+ F) - C, which is 1 for a mesh of a ball."""
    nv, ne = mesh.npoints, len(mesh.edges()[0])
    if mesh.dim == 2:
        return nv - ne + mesh.ncells
    return nv - ne + len(mesh.faces()[0]) - mesh.ncells


@pytest.mark.parametrize("cell", list(CASES))
def test_counts_and_euler_characteristic(cell):
    make, ncells, npts, nedges, nfaces, nbnd = CASES[cell]
    mesh = make()
    assert (mesh.ncells, mesh.npoints, len(mesh.edges()[0])) == (ncells, npts, nedges)
    if nfaces is not None:
        assert len(mesh.faces()[0]) == nfaces
    assert len(mesh.boundary_facets()) == nbnd
    assert euler(mesh) == 1
    # the named sides partition the exterior facets
    named = np.concatenate(list(mesh.boundaries.values()))
    assert len(named) == nbnd
    assert {tuple(sorted(f)) for f in named} == {tuple(sorted(f)) for f in mesh.boundary_facets()}


@pytest.mark.parametrize("cell", list(CASES))
def test_generated_meshes_are_positive_and_fill_the_box(cell):
    mesh = CASES[cell][0]()
    assert np.all(mesh.jacobian_determinants() > 0)
    mesh.check_quality()
    assert mesh.cell_volumes().sum() == pytest.approx(
        1.0, abs=1e-13
    )  # all cases fill the unit square or cube
    # a shifted, stretched box
    lo, hi = (-1.0, 2.0, 0.5)[: mesh.dim], (3.0, 2.5, 4.0)[: mesh.dim]
    other = rectangle_mesh(lo, hi, 3, cell) if mesh.dim == 2 else box_mesh(lo, hi, 2, cell)
    assert other.cell_volumes().sum() == pytest.approx(np.prod(np.subtract(hi, lo)), rel=1e-13)
    np.testing.assert_allclose(other.points.min(axis=0), lo)
    np.testing.assert_allclose(other.points.max(axis=0), hi)


@pytest.mark.parametrize("cell", list(CASES))
def test_named_sides_are_on_their_planes_and_outward(cell):
    mesh = CASES[cell][0]()
    sides = {
        "left": (0, 0.0),
        "right": (0, 1.0),
        "bottom": (1, 0.0),
        "top": (1, 1.0),
        "front": (2, 0.0),
        "back": (2, 1.0),
    }
    assert set(mesh.boundaries) == {k for k, (d, _) in sides.items() if d < mesh.dim}
    centroid = mesh.points[mesh.cells].mean(axis=1)
    for name, (d, value) in sides.items():
        if d >= mesh.dim:
            continue
        facets = mesh.boundaries[name]
        np.testing.assert_allclose(mesh.points[facets][..., d], value)
        # orientation: the facet normal from its vertex order points away from the owning cell
        cells, local = mesh.locate_facets(facets)
        v = mesh.points[facets]
        if mesh.dim == 2:
            t = v[:, 1] - v[:, 0]
            n = np.stack([t[:, 1], -t[:, 0]], axis=-1)
        else:
            n = np.cross(v[:, 1] - v[:, 0], v[:, -1] - v[:, 0])
        assert np.all(np.einsum("fd,fd->f", n, v[:, 0] - centroid[cells]) > 0)
        # locate_facets gives the local facet whose vertices are the facet's
        ref_facets = np.array(mesh.reference.facets)
        np.testing.assert_array_equal(
            np.sort(mesh.cells[cells[:, None], ref_facets[local]], 1), np.sort(facets, 1)
        )


@pytest.mark.parametrize("cell", list(CASES))
def test_edges_and_faces_consistent_with_reference_element(cell):
    mesh = CASES[cell][0]()
    el = reference_element(cell, 2)
    edges, c2e = mesh.edges()
    assert np.all(edges[:, 0] < edges[:, 1])
    local = np.array(el.edges)
    # cell_to_edge column e is the cell's local edge el.edges[e]
    np.testing.assert_array_equal(np.sort(mesh.cells[:, local], axis=-1), edges[c2e])
    # every interior edge of a 2D mesh is shared by exactly two cells; the P2 node count follows
    if mesh.dim == 3:
        faces, c2f = mesh.faces()
        lf = np.array(el.faces)
        np.testing.assert_array_equal(np.sort(mesh.cells[:, lf], -1), np.sort(faces[c2f], -1))
    # geometric check: the midpoint of local edge e from the edge table equals the element's edge node mapped
    mid_table = mesh.points[edges[c2e]].mean(axis=2)  # (ncells, nedges, dim)
    mid_cells = (mesh.points[mesh.cells[:, local[:, 0]]] + mesh.points[mesh.cells[:, local[:, 1]]]) / 2
    np.testing.assert_allclose(mid_table, mid_cells)


def test_unit_square_node_numbering_and_diagonals():
    m = unit_square(1)
    np.testing.assert_array_equal(m.points, [[0, 0], [1, 0], [0, 1], [1, 1]])
    assert m.cells.tolist() == [[0, 1, 3], [0, 3, 2]]
    assert unit_square(1, diagonal="left").cells.tolist() == [[0, 1, 2], [1, 3, 2]]
    assert m.boundaries["left"].tolist() == [[2, 0]] and m.boundaries["top"].tolist() == [[3, 2]]


def test_large_triangle_mesh_edges_are_vectorised():
    """250k cells: a Python loop over cells would take seconds; this runs in a fraction of one."""
    mesh = unit_square(350)
    edges, c2e = mesh.edges()
    n = 350
    assert len(edges) == 3 * n * n + 2 * n and c2e.shape == (2 * n * n, 3)
    assert len(mesh.boundary_facets()) == 4 * n
    # each edge is used by one (boundary) or two (interior) cells
    uses = np.bincount(c2e.ravel(), minlength=len(edges))
    assert set(np.unique(uses)) == {1, 2} and (uses == 1).sum() == 4 * n


def test_quality_check_names_the_inverted_cell():
    mesh = unit_square(2)
    cells = np.array(mesh.cells)
    cells[5] = cells[5][[0, 2, 1]]  # flip one triangle
    with pytest.raises(ValueError, match=r"cell 5 .* non-positive Jacobian determinant -2\.500e-01"):
        Mesh(mesh.points, cells, "triangle")
    Mesh(mesh.points, cells, "triangle", check=False)  # can be disabled
    # a non-convex quadrilateral: positive area but negative Jacobian at one vertex
    pts = np.array([[0.0, 0.0], [1.0, 0.0], [0.3, 0.3], [0.0, 1.0]])
    with pytest.raises(ValueError, match=r"cell 0 .* at its local vertex 2"):
        Mesh(pts, [[0, 1, 2, 3]], "quad")
    # a degenerate (flat) tetrahedron
    pts = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [1, 1, 0.0]])
    with pytest.raises(ValueError, match="inverted or degenerate"):
        Mesh(pts, [[0, 1, 2, 3]], "tetra")


def test_all_mirrored_cells_are_reoriented():
    mesh = unit_cube(2, cell="hexahedron")
    mirrored = np.array(mesh.cells)[:, [4, 5, 6, 7, 0, 1, 2, 3]]  # top and bottom swapped: left-handed
    with pytest.raises(ValueError, match="mesh.reoriented"):
        Mesh(mesh.points, mirrored, "hexahedron")
    fixed = Mesh(mesh.points, mirrored, "hexahedron", check=False).reoriented()
    assert np.all(fixed.jacobian_determinants() > 0)
    assert fixed.cell_volumes().sum() == pytest.approx(1.0)


def test_tag_boundary_and_subdomain():
    mesh = unit_square(4)
    tagged = mesh.tag_boundary("inlet", lambda x: np.isclose(x[0], 0.0) & (x[1] < 0.5))
    assert tagged.boundaries["inlet"].shape == (2, 2) and "inlet" not in mesh.boundaries
    assert tagged.edges()[0] is mesh.edges()[0]  # topology is shared, not recomputed
    np.testing.assert_array_equal(tagged.boundary_vertices("inlet"), [0, 5, 10])
    interface = mesh.tag_boundary("mid", lambda x: np.isclose(x[0], 0.5), facets="all")
    assert len(interface.boundaries["mid"]) == 4
    sub = mesh.tag_subdomain("left_half", lambda x: x[0] < 0.5)
    assert len(sub.subdomains["left_half"]) == 16
    with pytest.raises(ValueError, match="selected no exterior facet"):
        mesh.tag_boundary("none", lambda x: x[0] == 2.0)
    with pytest.raises(ValueError, match="bool array of shape"):
        mesh.tag_boundary("bad", lambda x: x[0])
    with pytest.raises(KeyError, match="no boundary named 'outlet'"):
        mesh.boundary("outlet")


def test_constructor_validates_input():
    pts = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    with pytest.raises(ValueError, match=r"points must have shape \(npts, 2\).*points\[:, :2\]"):
        Mesh(np.c_[pts, np.zeros(3)], [[0, 1, 2]], "triangle")
    with pytest.raises(ValueError, match=r"cells must have shape \(n, 3\)"):
        Mesh(pts, [[0, 1, 2, 2]], "triangle")
    with pytest.raises(ValueError, match="indices outside"):
        Mesh(pts, [[0, 1, 3]], "triangle")
    with pytest.raises(TypeError, match="integer indices"):
        Mesh(pts, [[0, 1, 2.5]], "triangle")
    with pytest.raises(ValueError, match="not a mesh cell type"):
        Mesh(pts, [[0, 1]], "line")
    with pytest.raises(ValueError, match="not a facet of any cell"):
        Mesh(np.r_[pts, [[1.0, 1.0]]], [[0, 1, 2]], "triangle", boundaries={"x": [[1, 3]]})
    for bad in (0, 2.0, (2,), (2, 0), True):
        with pytest.raises(ValueError, match="n must be a positive int"):
            unit_square(bad)
    with pytest.raises(ValueError, match="upper must exceed lower"):
        rectangle_mesh((0, 0), (1, -1))
    with pytest.raises(ValueError, match="cell must be 'tetra' or 'hexahedron'"):
        unit_cube(2, cell="triangle")
    with pytest.raises(ValueError, match="faces\\(\\) is for 3D meshes"):
        unit_square(2).faces()
    m = Mesh(pts, [[0, 1, 2]], "triangle", boundaries={"hyp": [[2, 1]]})
    assert m.boundaries["hyp"].tolist() == [[1, 2]]  # re-oriented outwards
    with pytest.raises(ValueError):
        m.points[0, 0] = 5.0  # read-only


MSH_V2 = """$MeshFormat
2.2 0 8
$EndMeshFormat
$PhysicalNames
5
1 1 "bottom"
1 2 "right"
1 3 "top"
1 4 "left"
2 5 "domain"
$EndPhysicalNames
$Nodes
5
1 0 0 0
2 1 0 0
3 1 1 0
4 0 1 0
5 2 2 0
$EndNodes
$Elements
7
1 15 2 0 5 5
2 1 2 1 1 1 2
3 1 2 2 2 2 3
4 1 2 3 3 3 4
5 1 2 4 4 1 4
6 2 2 5 1 1 2 3
7 2 2 5 1 1 3 4
$EndElements
"""

# gmsh 4.1: the second triangle is clockwise (reoriented on reading), all boundary curves in physical groups
MSH_V4 = """$MeshFormat
4.1 0 8
$EndMeshFormat
$PhysicalNames
5
1 1 "bottom"
1 2 "right"
1 3 "top"
1 4 "left"
2 5 "domain"
$EndPhysicalNames
$Entities
4 4 1 0
1 0 0 0 0
2 1 0 0 0
3 1 1 0 0
4 0 1 0 0
1 0 0 0 1 0 0 1 1 2 1 -2
2 1 0 0 1 1 0 1 2 2 2 -3
3 0 1 0 1 1 0 1 3 2 3 -4
4 0 0 0 0 1 0 1 4 2 4 -1
1 0 0 0 1 1 0 1 5 4 1 2 3 4
$EndEntities
$Nodes
1 4 1 4
2 1 0 4
1
2
3
4
0 0 0
1 0 0
1 1 0
0 1 0
$EndNodes
$Elements
5 6 1 6
1 1 1 1
1 1 2
1 2 1 1
2 2 3
1 3 1 1
3 3 4
1 4 1 1
4 4 1
2 1 2 2
5 1 2 3
6 1 4 3
$EndElements
"""


@pytest.mark.parametrize("text", [MSH_V2, MSH_V4], ids=["v2", "v4"])
def test_read_gmsh_physical_groups(tmp_path, text):
    path = tmp_path / "square.msh"
    path.write_text(text)
    mesh = Mesh.read(path)
    assert mesh.cell_type == "triangle" and mesh.npoints == 4  # the unused point 5 is dropped
    np.testing.assert_array_equal(mesh.points, [[0, 0], [1, 0], [1, 1], [0, 1]])
    assert mesh.cells.tolist() == [[0, 1, 2], [0, 2, 3]]
    assert {k: v.tolist() for k, v in mesh.boundaries.items()} == {
        "bottom": [[0, 1]],
        "right": [[1, 2]],
        "top": [[2, 3]],
        "left": [[3, 0]],  # written (1, 4) in the v2 file: re-oriented outwards
    }
    assert mesh.subdomains["domain"].tolist() == [0, 1]


@pytest.mark.parametrize("cell", list(CASES))
def test_gmsh_round_trip_keeps_boundaries(tmp_path, cell):
    mesh = CASES[cell][0]().tag_subdomain("low", lambda x: x[0] < 0.4)
    u = np.sin(mesh.points[:, 0]) + mesh.points[:, 1]
    mesh.write(tmp_path / "m.msh", point_data={"u": u})
    back, point_data, _ = read_mesh(tmp_path / "m.msh", with_data=True)
    np.testing.assert_array_equal(back.points, mesh.points)
    np.testing.assert_array_equal(back.cells, mesh.cells)
    assert set(back.boundaries) == set(mesh.boundaries)
    for name in mesh.boundaries:
        np.testing.assert_array_equal(back.boundaries[name], mesh.boundaries[name])
    np.testing.assert_array_equal(back.subdomains["low"], mesh.subdomains["low"])
    np.testing.assert_allclose(point_data["u"], u, rtol=0, atol=0)


@pytest.mark.parametrize("suffix", [".vtu", ".xdmf"])
@pytest.mark.parametrize("cell", ["triangle", "hexahedron"])
def test_vtu_xdmf_round_trip_with_data(tmp_path, suffix, cell):
    mesh = CASES[cell][0]()
    u = mesh.points[:, 0] ** 2 - mesh.points[:, 1]
    grad = np.c_[2 * mesh.points[:, 0], -np.ones(mesh.npoints)]
    path = tmp_path / f"field{suffix}"
    import jax.numpy as jnp

    # JAX arrays are accepted as data (a Field's coefficients)
    write_mesh(
        mesh, path, point_data={"u": jnp.asarray(u), "grad": grad}, cell_data={"id": np.arange(mesh.ncells)}
    )
    back, point_data, cell_data = read_mesh(path, with_data=True)
    np.testing.assert_allclose(back.points, mesh.points, rtol=0, atol=1e-15)
    np.testing.assert_array_equal(back.cells, mesh.cells)
    np.testing.assert_allclose(point_data["u"], u, rtol=1e-15)
    if mesh.dim == 2:  # 2-vectors are stored with a zero z component
        np.testing.assert_allclose(point_data["grad"], np.c_[grad, np.zeros(mesh.npoints)])
    np.testing.assert_array_equal(cell_data["id"], np.arange(mesh.ncells))


def test_write_rejects_wrong_data_shapes(tmp_path):
    mesh = unit_square(2)
    with pytest.raises(ValueError, match=r"point_data\['u'\] must have 9 rows"):
        mesh.write(tmp_path / "a.vtu", point_data={"u": np.zeros(8)})
    with pytest.raises(ValueError, match=r"cell_data\['c'\] must have 8 rows"):
        mesh.write(tmp_path / "a.vtu", cell_data={"c": np.zeros(9)})
    with pytest.raises(ValueError, match="write cell data to a .vtu"):
        mesh.write(tmp_path / "a.msh", cell_data={"c": np.zeros(8)})
    with pytest.raises(ValueError, match="could not read mesh file"):
        (tmp_path / "junk.msh").write_text("not a mesh")
        Mesh.read(tmp_path / "junk.msh")


def test_time_series_pvd_and_xdmf(tmp_path):
    import xml.etree.ElementTree as ET

    import meshio

    mesh = unit_square(3, cell="quad")
    times = [0.0, 0.5, 1.0]
    values = [np.cos(t) * mesh.points[:, 0] for t in times]
    files = write_time_series(tmp_path / "heat.pvd", mesh, times, [{"u": v} for v in values])
    assert len(files) == 4
    pvd = ET.parse(files[0]).getroot()
    entries = pvd.findall("./Collection/DataSet")
    assert [float(e.get("timestep")) for e in entries] == times
    step = meshio.read(tmp_path / entries[2].get("file"))
    np.testing.assert_allclose(step.point_data["u"], values[2])

    (xdmf,) = write_time_series(tmp_path / "heat.xdmf", mesh, times, {"u": np.stack(values)})
    root = ET.parse(xdmf).getroot()
    assert [float(t.get("Value")) for t in root.iter("Time")] == times
    last = [g for g in root.iter("Grid") if g.find("Time") is not None][-1]
    data = np.array(last.find("Attribute/DataItem").text.split(), dtype=float)
    np.testing.assert_allclose(data, values[-1])
    assert Mesh.read(xdmf).ncells == mesh.ncells  # the mesh grid reads back
    with pytest.raises(ValueError, match="leading time axis of length 3"):
        write_time_series(tmp_path / "bad.pvd", mesh, times, {"u": np.stack(values[:2])})
    with pytest.raises(ValueError, match="must end in .pvd or .xdmf"):
        write_time_series(tmp_path / "bad.vtu", mesh, times, {"u": np.stack(values)})


def test_read_edge_cases(tmp_path):
    import meshio

    pts = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0.5, 0, 0], [0.5, 0.5, 0], [0, 0.5, 0]], dtype=float)
    meshio.write(tmp_path / "p2.vtu", meshio.Mesh(pts, [("triangle6", [[0, 1, 2, 3, 4, 5]])]))
    with pytest.warns(UserWarning, match="second-order cells"):
        mesh = Mesh.read(tmp_path / "p2.vtu")
    assert mesh.npoints == 3 and mesh.cells.tolist() == [[0, 1, 2]]  # mid-side nodes dropped

    sq = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0], [2, 0, 0]], dtype=float)
    mixed = meshio.Mesh(sq, [("quad", [[0, 1, 2, 3]]), ("triangle", [[1, 4, 2]])])
    meshio.write(tmp_path / "mixed.vtu", mixed)
    with pytest.raises(ValueError, match=r"cells of types \['quad', 'triangle'\]"):
        Mesh.read(tmp_path / "mixed.vtu")

    bent = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0.3]], dtype=float)
    meshio.write(tmp_path / "bent.vtu", meshio.Mesh(bent, [("triangle", [[0, 1, 2]])]))
    with pytest.raises(ValueError, match="surface mesh in 3D"):
        Mesh.read(tmp_path / "bent.vtu")

    lines = meshio.Mesh(sq[:2], [("line", [[0, 1]])])
    meshio.write(tmp_path / "lines.vtu", lines)
    with pytest.raises(ValueError, match="no 2D or 3D cells"):
        Mesh.read(tmp_path / "lines.vtu")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        Mesh.read(tmp_path / "missing.msh")

    # a clockwise mesh is reoriented by default and rejected with reorient=False
    cw = np.array([[0, 0, 0], [0, 1, 0], [1, 0, 0]], dtype=float)
    meshio.write(tmp_path / "cw.vtu", meshio.Mesh(cw, [("triangle", [[0, 1, 2]])]))
    assert Mesh.read(tmp_path / "cw.vtu").cells.tolist() == [[0, 2, 1]]
    with pytest.raises(ValueError, match="non-positive Jacobian"):
        Mesh.read(tmp_path / "cw.vtu", reorient=False)


def cell_set(mesh):
    """Cells as sets of vertex coordinates: compares meshes independently of numbering."""
    return {frozenset(map(tuple, np.round(mesh.points[c], 12))) for c in mesh.cells}


@pytest.mark.parametrize("cell", list(CASES))
def test_refine_counts_conformity_and_boundaries(cell):
    mesh = CASES[cell][0]().tag_subdomain("low", lambda x: x[0] < 0.4)
    fine = mesh.refine()
    nchild = 4 if mesh.dim == 2 else 8
    nedges = len(mesh.edges()[0])
    extra = (
        {"triangle": 0, "quad": mesh.ncells, "tetra": 0}.get(cell)
        if mesh.dim == 2 or cell == "tetra"
        else None
    )
    if extra is None:  # hexahedra: face centres and cell centres
        extra = len(mesh.faces()[0]) + mesh.ncells
    assert fine.ncells == nchild * mesh.ncells
    assert fine.npoints == mesh.npoints + nedges + extra
    np.testing.assert_array_equal(fine.points[: mesh.npoints], mesh.points)  # old vertices keep their ids
    assert euler(fine) == 1  # conforming: no hanging nodes, no duplicated faces
    assert fine.cell_volumes().sum() == pytest.approx(1.0, abs=1e-13)
    assert np.all(fine.jacobian_determinants() > 0)
    nsub = 2 if mesh.dim == 2 else 4
    assert len(fine.boundary_facets()) == nsub * len(mesh.boundary_facets())
    for name, facets in mesh.boundaries.items():
        refined = fine.boundaries[name]
        assert len(refined) == nsub * len(facets)
        d = {"left": 0, "right": 0, "bottom": 1, "top": 1, "front": 2, "back": 2}[name]
        np.testing.assert_allclose(fine.points[refined][..., d], mesh.points[facets][0, 0, d])
        # already outward: the constructor's re-orientation leaves them unchanged
        again = Mesh(fine.points, fine.cells, cell, {name: refined})
        np.testing.assert_array_equal(again.boundaries[name], refined)
    coarse_vol = mesh.cell_volumes()[mesh.subdomains["low"]].sum()
    assert fine.cell_volumes()[fine.subdomains["low"]].sum() == pytest.approx(coarse_vol, rel=1e-13)


@pytest.mark.parametrize("cell, make", [
    ("triangle", lambda n: unit_square(n)),
    ("quad", lambda n: unit_square(n, cell="quad")),
    ("hexahedron", lambda n: unit_cube(n, cell="hexahedron")),
])  # fmt: skip
def test_refining_a_structured_mesh_gives_the_finer_structured_mesh(cell, make):
    assert cell_set(make(1).refine(2)) == cell_set(make(4))


def test_refined_tetrahedra_keep_their_shape():
    """Splitting along the shortest diagonal: the worst shape measure vol / L^3 stays constant over levels."""
    mesh = unit_cube(1)
    worst = []
    for _ in range(3):
        x = mesh.points[mesh.cells]
        e = np.array(mesh.reference.edges)
        longest = np.linalg.norm(x[:, e[:, 0]] - x[:, e[:, 1]], axis=-1).max(axis=1)
        worst.append((mesh.cell_volumes() / longest**3).min())
        mesh = mesh.refine()
    np.testing.assert_allclose(worst, worst[0], rtol=1e-12)


def test_refine_distorted_quads_and_bad_input():
    mesh = unit_square(3, cell="quad")
    pts = mesh.points + 0.08 * np.sin(3 * mesh.points[:, ::-1])  # a smooth distortion of the interior
    distorted = Mesh(pts, mesh.cells, "quad", mesh.boundaries)
    fine = distorted.refine(2)
    assert fine.cell_volumes().sum() == pytest.approx(distorted.cell_volumes().sum(), rel=1e-12)
    with pytest.raises(ValueError, match="times must be an int >= 0"):
        mesh.refine(-1)
    assert mesh.refine(0) is mesh


def test_from_meshio_in_memory_with_physical_groups():
    import meshio

    from igax.fem.mesh import from_meshio

    pts = np.array([[0, 0, 0], [2, 0, 0], [2, 1, 0], [0, 1, 0]], dtype=float)
    raw = meshio.Mesh(
        pts,
        [("line", [[1, 2]]), ("quad", [[0, 1, 2, 3]])],
        cell_data={"gmsh:physical": [np.array([7]), np.array([3])]},
        field_data={"outlet": np.array([7, 1]), "fluid": np.array([3, 2])},
    )
    mesh = from_meshio(raw)
    assert mesh.cell_type == "quad" and mesh.dim == 2
    assert mesh.boundaries["outlet"].tolist() == [[1, 2]]
    assert mesh.subdomains["fluid"].tolist() == [0]
    assert mesh.cell_volumes().sum() == pytest.approx(2.0)
    with pytest.raises(ValueError, match="in-memory: a 2D mesh whose points do not lie in a plane"):
        bent = pts + np.array([[0, 0, 0], [0, 0, 0], [0, 0, 1.0], [0, 0, 0]])
        from_meshio(meshio.Mesh(bent, [("quad", [[0, 1, 2, 3]])]), source="in-memory")


@pytest.mark.slow
def test_million_vertex_triangle_mesh():
    n = 999  # (n + 1)^2 = 1e6 vertices, 2e6 triangles
    mesh = unit_square(n)
    edges, c2e = mesh.edges()
    assert mesh.npoints == 10**6 and len(edges) == 3 * n * n + 2 * n
    assert len(mesh.boundary_facets()) == 4 * n
    mesh.check_quality()
    assert mesh.cell_volumes().sum() == pytest.approx(1.0, rel=1e-12)


@pytest.mark.parametrize("k, top", [(2, 50), (3, 1000), (4, 10**6)])  # the last one takes the lexsort path
def test_unique_rows_matches_numpy(k, top):
    from igax.fem.mesh import unique_rows

    rng = np.random.default_rng(k)
    base = rng.integers(0, top, size=(200, k))
    rows = base[rng.integers(0, 200, size=1000)]  # many repeats
    first, inverse, counts = unique_rows(rows)
    uniq, np_inverse, np_counts = np.unique(rows, axis=0, return_inverse=True, return_counts=True)
    np.testing.assert_array_equal(rows[first], uniq)  # groups in sorted order, first = a member
    np.testing.assert_array_equal(inverse, np_inverse.reshape(-1))
    np.testing.assert_array_equal(counts, np_counts)
    # first is the earliest occurrence
    earliest = np.array([np.flatnonzero(inverse == g)[0] for g in range(len(first))])
    np.testing.assert_array_equal(first, earliest)
