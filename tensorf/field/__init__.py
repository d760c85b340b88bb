"""The radiance field: VM and CP grid decompositions behind one interface, the shading
MLP, density and colour queries with their regularisers, and the alpha mask."""
