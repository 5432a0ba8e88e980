/**
 * @file
 * libmoemlora: multi-domain CTR prediction with MLoRA and MoE-MLoRA.
 * The umbrella header: include this one.
 */
#ifndef MOEMLORA_H
#define MOEMLORA_H

#include "alloc.h"
#include "add_domain.h"
#include "backbone.h"
#include "backbones.h"
#include "ctx.h"
#include "data.h"
#include "metrics.h"
#include "embedding.h"
#include "gate.h"
#include "lora.h"
#include "model.h"
#include "model_file.h"
#include "tower.h"
#include "trainer.h"
#include "export.h"
#include "gradcheck.h"
#include "hashing.h"
#include "kernels.h"
#include "loss.h"
#include "optimizer.h"
#include "param.h"
#include "session.h"
#include "status.h"
#include "version.h"
#include "view.h"

#endif
