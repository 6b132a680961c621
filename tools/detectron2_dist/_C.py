"""Placeholder for detectron2's compiled extension ``detectron2._C``.

This detectron2 was provisioned by the project's ``make install`` from the
``pb1-detectron2==0.6`` source distribution, which ships detectron2's Python code
without its C++/CUDA sources, so there are no compiled ops. detectron2 0.6 imports
``_C`` at import time (deformable conv, rotated boxes, the fast COCO evaluator), so
the module must exist; using any op through it raises a ``RuntimeError`` naming the op.
The environment-report functions used by ``collect_env_info`` answer honestly.
"""

HAS_COMPILED_OPS = False


def get_compiler_version():
    return "none: no compiled ops (detectron2 provisioned from the pb1-detectron2 sdist)"


def get_cuda_version():
    return "none: no compiled ops (detectron2 provisioned from the pb1-detectron2 sdist)"


def has_cuda():
    return False


def __getattr__(name):
    if name.startswith("__"):
        raise AttributeError(name)
    raise RuntimeError(
        f"detectron2._C.{name} is a compiled op, and this detectron2 install has no compiled "
        "ops (it was provisioned from the pb1-detectron2==0.6 sdist, which has no C++ sources). "
        "Use the torchvision equivalent (e.g. torchvision.ops.deform_conv2d, "
        "COCOEvaluator(..., use_fast_impl=False)) or install an upstream detectron2 build."
    )
