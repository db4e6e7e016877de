"""Paper A: HPNet, the intentional mask transformation g(M; n, β), semantic pruning and analyses."""
