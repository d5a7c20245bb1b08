"""The GEMM study's products (studies/gemm_shapes.py) are the step's: the ones flops_per_sample counts."""
import pytest

import impls
from studies.gemm_shapes import products


@pytest.mark.parametrize("sizes", [(784, 256, 128, 64, 10), (784, 32, 32, 10)])
@pytest.mark.parametrize("batch", [1, 256])
def test_the_products_of_one_step_are_the_flops_the_roofline_counts(sizes, batch):
    found = products(sizes, batch)
    assert sum(2 * m * k * n for _, m, k, n, _, _ in found) == batch * impls.flops_per_sample(impls.NetSpec(sizes))
    assert len(found) == 3 * (len(sizes) - 1) - 1          # no input gradient for the first layer
    assert [label for label, *_ in found][:3] == ["forward 1", "dW 1", "forward 2"]
