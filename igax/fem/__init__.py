"""igax.fem: geometry and meshes, quadrature, spaces, forms and assembly, boundary conditions, fields, I/O."""

from igax.fem import quadrature
from igax.fem.quadrature import facet_quadrature, gauss_legendre, simplex_quadrature, tensor_gauss
