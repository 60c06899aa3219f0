/* nitro_mcu instruction counter: QEMU 7.2 TCG plugin, API v1.
 *
 *   gcc -O2 -shared -fPIC -o libinsncount.so insncount.c
 *   qemu-system-arm ... -plugin ./libinsncount.so,start=0xADDR,stop=0xADDR[,out=path][,limit=N] [-d plugin -D log]
 *
 * Counts every executed guest instruction with an inline 64-bit add (no call).
 * start/stop are the addresses of the first instruction of prof_start() and
 * prof_stop() (Thumb bit cleared); region = sum over regions of the counter
 * difference between reaching prof_stop and reaching prof_start.
 * At exit prints "insns total=N region=N regions=N\n" through qemu_plugin_outs
 * (visible with -d plugin) and, with out=path, also writes that line to path.
 * limit=N cuts the power: QEMU exits with status 86 right before the (N+1)-th instruction inside the regions
 * (N = 0 cuts at the first), after writing "insns cut region=N" to path; files the guest wrote through
 * semihosting keep what it wrote before (the power-loss sweeps, docs/checkpoint.md).  It adds a callback per
 * instruction, so runs with a limit are slower.
 * Single vCPU only (all Cortex-M machines used by nitro_mcu).
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "qemu-plugin-min.h"

QEMU_PLUGIN_EXPORT int qemu_plugin_version = 1;

static uint64_t insn_count;
static uint64_t region_total;
static uint64_t region_begin;
static uint64_t region_count;
static int in_region;
static uint64_t start_addr = UINT64_MAX;
static uint64_t stop_addr = UINT64_MAX;
static char out_path[4096];
static uint64_t limit = UINT64_MAX;
static uint64_t region_seen;
#define CUT_STATUS 86

static void on_start(unsigned int vcpu_index, void *udata)
{
    (void)vcpu_index; (void)udata;
    region_begin = insn_count;
    in_region = 1;
}

static void on_stop(unsigned int vcpu_index, void *udata)
{
    (void)vcpu_index; (void)udata;
    if (in_region) {
        region_total += insn_count - region_begin;
        region_count++;
        in_region = 0;
    }
}

static void on_insn_limit(unsigned int vcpu_index, void *udata)
{
    (void)vcpu_index; (void)udata;
    if (!in_region) {
        return;
    }
    if (region_seen == limit) {
        if (out_path[0] != '\0') {
            FILE *f = fopen(out_path, "w");
            if (f != NULL) {
                fprintf(f, "insns cut region=%" PRIu64 "\n", region_seen);
                fclose(f);
            }
        }
        _exit(CUT_STATUS);
    }
    region_seen++;
}

static void on_tb_trans(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
    (void)id;
    size_t n = qemu_plugin_tb_n_insns(tb);
    for (size_t i = 0; i < n; i++) {
        struct qemu_plugin_insn *insn = qemu_plugin_tb_get_insn(tb, i);
        uint64_t pc = qemu_plugin_insn_vaddr(insn);
        /* marker callbacks first, then the inline add: the snapshot excludes the marker insn
           itself at both ends, so region = insns in [prof_start, prof_stop) */
        if (pc == start_addr) {
            qemu_plugin_register_vcpu_insn_exec_cb(insn, on_start, QEMU_PLUGIN_CB_NO_REGS, NULL);
        } else if (pc == stop_addr) {
            qemu_plugin_register_vcpu_insn_exec_cb(insn, on_stop, QEMU_PLUGIN_CB_NO_REGS, NULL);
        }
        if (limit != UINT64_MAX) {   /* after the markers: in_region is already up to date */
            qemu_plugin_register_vcpu_insn_exec_cb(insn, on_insn_limit, QEMU_PLUGIN_CB_NO_REGS, NULL);
        }
        qemu_plugin_register_vcpu_insn_exec_inline(insn, QEMU_PLUGIN_INLINE_ADD_U64, &insn_count, 1);
    }
}

static void on_exit_cb(qemu_plugin_id_t id, void *udata)
{
    (void)id; (void)udata;
    char line[160];
    snprintf(line, sizeof line, "insns total=%" PRIu64 " region=%" PRIu64 " regions=%" PRIu64 "\n",
             insn_count, region_total, region_count);
    qemu_plugin_outs(line);
    if (out_path[0] != '\0') {
        FILE *f = fopen(out_path, "w");
        if (f != NULL) {
            fputs(line, f);
            fclose(f);
        }
    }
}

static int parse_addr(const char *s, uint64_t *out)
{
    char *end = NULL;
    unsigned long long v = strtoull(s, &end, 0);
    if (end == s || *end != '\0') {
        return -1;
    }
    *out = (uint64_t)v & ~(uint64_t)1u;   /* drop the Thumb bit */
    return 0;
}

QEMU_PLUGIN_EXPORT int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info,
                                           int argc, char **argv)
{
    (void)info;
    for (int i = 0; i < argc; i++) {
        const char *arg = argv[i];
        if (strncmp(arg, "arg=", 4) == 0) {      /* deprecated arg=name=value form */
            arg += 4;
        }
        if (strncmp(arg, "start=", 6) == 0) {
            if (parse_addr(arg + 6, &start_addr) != 0) {
                fprintf(stderr, "insncount: bad start address '%s'\n", arg + 6);
                return -1;
            }
        } else if (strncmp(arg, "stop=", 5) == 0) {
            if (parse_addr(arg + 5, &stop_addr) != 0) {
                fprintf(stderr, "insncount: bad stop address '%s'\n", arg + 5);
                return -1;
            }
        } else if (strncmp(arg, "limit=", 6) == 0) {
            char *end = NULL;
            limit = strtoull(arg + 6, &end, 0);
            if (end == arg + 6 || *end != '\0' || limit == UINT64_MAX) {
                fprintf(stderr, "insncount: bad limit '%s'\n", arg + 6);
                return -1;
            }
        } else if (strncmp(arg, "out=", 4) == 0) {
            snprintf(out_path, sizeof out_path, "%s", arg + 4);
        } else {
            fprintf(stderr, "insncount: unknown argument '%s' (expected start=, stop=, out=, limit=)\n", arg);
            return -1;
        }
    }
    qemu_plugin_register_vcpu_tb_trans_cb(id, on_tb_trans);
    qemu_plugin_register_atexit_cb(id, on_exit_cb, NULL);
    return 0;
}
