#!/bin/sh
# Pretends to train on the GPU it was given: raccoond hands each job the
# units of [resources] it holds, here one GPU ("0" or "1").
echo "training on GPU $RACCOON_RESOURCE_GPU"
