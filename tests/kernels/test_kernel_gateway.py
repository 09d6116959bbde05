"""The same client against a real Jupyter Kernel Gateway (required, from requirements.lock). # no Django"""

from __future__ import annotations

from tests.support.kernels import runs_a_kernel_start_to_end


async def test_it_runs_code_on_a_kernel_gateway(kernel_gateway: tuple[str, str]) -> None:
    await runs_a_kernel_start_to_end(*kernel_gateway)
