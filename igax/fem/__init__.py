"""igax.fem: geometry and meshes, quadrature, spaces, forms and assembly, boundary conditions, fields, I/O."""
