/* libmoemlora: multi-domain CTR prediction with MLoRA and MoE-MLoRA.
 * The umbrella header: include this one. */
#ifndef MOEMLORA_H
#define MOEMLORA_H

#include "alloc.h"
#include "ctx.h"
#include "export.h"
#include "status.h"
#include "version.h"
#include "view.h"

#endif
