"""igax.inverse: objectives, regularisers, observation operators, optimiser drivers."""
