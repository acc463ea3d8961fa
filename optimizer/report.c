/* report: storage and printing of the optimization report (see report.h).
 * Sizes are printed in MB (10^6) in the table and as exact byte counts in
 * JSON. Only stdio. */
#include "report.h"

#include "jsonw.h"
#include "rs_limits.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

void report_init(struct report *rep)
{
	memset(rep, 0, sizeof(*rep));
}

char *report_strdup(const char *s)
{
	if (!s)
		return NULL;
	size_t n = strlen(s) + 1;
	char *d = malloc(n);
	if (d)
		memcpy(d, s, n);
	return d;
}

static void image_dispose(struct report_image *img)
{
	free(img->platform);
	for (size_t i = 0; i < img->layer_count; i++)
		free(img->layers[i].media_type);
	free(img->layers);
	for (size_t i = 0; i < img->out_layer_count; i++)
		free(img->out_layers[i].media_type);
	free(img->out_layers);
	for (size_t i = 0; i < img->rule_count; i++)
		free(img->rules[i].name);
	free(img->rules);
	for (size_t i = 0; i < img->stripped_count; i++) {
		free(img->stripped_paths[i]);
		free(img->stripped_rules[i]);
	}
	free(img->stripped_paths);
	free(img->stripped_rules);
}

void report_dispose(struct report *rep)
{
	if (!rep)
		return;
	for (size_t i = 0; i < rep->image_count; i++)
		image_dispose(&rep->images[i]);
	free(rep->images);
	free(rep->source);
	free(rep->dest);
	free(rep->tag);
	free(rep->media_type);
	memset(rep, 0, sizeof(*rep));
}

struct report_image *report_add_image(struct report *rep)
{
	struct report_image *n = realloc(rep->images, (rep->image_count + 1) * sizeof(*n));
	if (!n)
		return NULL;
	rep->images = n;
	memset(&n[rep->image_count], 0, sizeof(*n));
	return &n[rep->image_count++];
}

enum rs_code report_add_stripped(struct report_image *img, const char *path, const char *rule,
				 struct rs_err *err)
{
	img->stripped_total++;
	if (img->stripped_count >= RS_LIMIT_REPORT_PATHS) {
		img->stripped_truncated = true;
		return RS_OK;
	}
	if (img->stripped_count == img->stripped_cap) {
		size_t nc = img->stripped_cap ? img->stripped_cap * 2 : 256;
		char **p = realloc(img->stripped_paths, nc * sizeof(char *));
		if (!p)
			return rs_err_set(err, RS_NOMEM, "out of memory in the report");
		img->stripped_paths = p;
		char **r = realloc(img->stripped_rules, nc * sizeof(char *));
		if (!r)
			return rs_err_set(err, RS_NOMEM, "out of memory in the report");
		img->stripped_rules = r;
		img->stripped_cap = nc;
	}
	char *a = report_strdup(path), *b = report_strdup(rule);
	if (!a || !b) {
		free(a);
		free(b);
		return rs_err_set(err, RS_NOMEM, "out of memory in the report");
	}
	img->stripped_paths[img->stripped_count] = a;
	img->stripped_rules[img->stripped_count] = b;
	img->stripped_count++;
	return RS_OK;
}

void report_totals(const struct report *rep, uint64_t *in_size, uint64_t *in_unc, uint64_t *out_size,
		   uint64_t *out_unc)
{
	*in_size = *in_unc = *out_size = *out_unc = 0;
	for (size_t i = 0; i < rep->image_count; i++) {
		*in_size += rep->images[i].in_size;
		*in_unc += rep->images[i].in_uncompressed;
		*out_size += rep->images[i].out_size;
		*out_unc += rep->images[i].out_uncompressed;
	}
}

static double mb(uint64_t b)
{
	return (double)b / 1e6;
}

static double pct(uint64_t after, uint64_t before)
{
	return before ? 100.0 * (double)after / (double)before : 100.0;
}

static const char *short_digest(const char *d, char *buf, size_t cap)
{
	snprintf(buf, cap, "%.19s", d && d[0] ? d : "-");
	return buf;
}

void report_print_text(const struct report *rep, FILE *out)
{
	char sd[32];
	fprintf(out, "regslim optimize %s -> %s\n", rep->source ? rep->source : "?", rep->dest ? rep->dest : "?");
	fprintf(out, "policy %s  squash %s  compression %s level %d\n", short_digest(rep->policy_digest, sd, sizeof(sd)),
		rep->squash ? rep->squash : "?", rep->compression ? rep->compression : "?", rep->level);
	for (size_t k = 0; k < rep->image_count; k++) {
		const struct report_image *im = &rep->images[k];
		fprintf(out, "\nimage %s%s%s -> %s\n", im->source_digest, im->platform ? "  " : "",
			im->platform ? im->platform : "", im->digest);
		fprintf(out, "  %-22s %14s %14s %8s\n", "", "before", "after", "after %");
		fprintf(out, "  %-22s %11.2f MB %11.2f MB %7.1f%%\n", "compressed", mb(im->in_size), mb(im->out_size),
			pct(im->out_size, im->in_size));
		fprintf(out, "  %-22s %11.2f MB %11.2f MB %7.1f%%\n", "uncompressed", mb(im->in_uncompressed),
			mb(im->out_uncompressed), pct(im->out_uncompressed, im->in_uncompressed));
		fprintf(out, "  %-22s %14zu %14zu\n", "layers", im->layer_count, im->out_layer_count);
		fprintf(out, "  %-22s %14.4f %14.4f\n", "efficiency (dive)", im->efficiency_in, im->efficiency_out);
		fprintf(out, "  %-22s %11.2f MB %11.2f MB\n", "wasted (dive)", mb(im->wasted_in), mb(im->wasted_out));
		fprintf(out, "\n  %-5s %-19s %10s %10s %9s %9s %9s %6s %6s\n", "layer", "digest", "size MB", "tar MB",
			"strip MB", "squash MB", "dedupe MB", "wh", "->out");
		for (size_t i = 0; i < im->layer_count; i++) {
			const struct report_layer *l = &im->layers[i];
			fprintf(out, "  %-5zu %-19s %10.2f %10.2f %9.2f %9.2f %9.2f %3" PRIu64 "/%-2" PRIu64 " %5zu%s\n", i + 1,
				short_digest(l->digest, sd, sizeof(sd)), mb(l->size), mb(l->uncompressed),
				mb(l->stripped_bytes), mb(l->overlay_bytes), mb(l->dup_bytes), l->whiteouts_applied,
				l->whiteouts, l->out_layer + 1, l->base ? " base" : "");
		}
		fprintf(out, "\n  %-18s %12s %10s\n", "strip rule", "removed MB", "entries");
		for (size_t i = 0; i < im->rule_count; i++)
			if (im->rules[i].entries)
				fprintf(out, "  %-18s %12.2f %10" PRIu64 "\n", im->rules[i].name, mb(im->rules[i].bytes),
					im->rules[i].entries);
		fprintf(out, "\n  whiteouts applied %" PRIu64 ", duplicates dropped %" PRIu64 " (%.2f MB), hard links relinked %" PRIu64
			", materialized %" PRIu64 ", paths stripped %" PRIu64 "\n",
			im->whiteouts_applied, im->dup_entries, mb(im->dup_bytes), im->links_relinked, im->links_materialized,
			im->stripped_total);
		for (size_t i = 0; i < im->out_layer_count; i++) {
			const struct report_out_layer *o = &im->out_layers[i];
			fprintf(out, "  out layer %zu: %s %.2f MB (%.2f MB tar)%s\n", i + 1, o->digest, mb(o->size),
				mb(o->uncompressed), o->copied ? " copied" : "");
		}
	}
	uint64_t a, b, c, d;
	report_totals(rep, &a, &b, &c, &d);
	fprintf(out, "\ntotal: compressed %.2f MB -> %.2f MB (%.1f%%), uncompressed %.2f MB -> %.2f MB (%.1f%%)\n", mb(a),
		mb(c), pct(c, a), mb(b), mb(d), pct(d, b));
	fprintf(out, "wrote %s %s\n", rep->digest, rep->tag ? rep->tag : "");
}

static void write_layer(struct jsonw *w, const struct report_layer *l)
{
	jsonw_object_begin(w);
	jsonw_member_string(w, "digest", l->digest);
	jsonw_member_string(w, "diff_id", l->diff_id);
	jsonw_member_string(w, "mediaType", l->media_type);
	jsonw_member_u64(w, "size", l->size);
	jsonw_member_u64(w, "uncompressed", l->uncompressed);
	jsonw_member_u64(w, "entries", l->entries);
	jsonw_member_u64(w, "kept_entries", l->kept_entries);
	jsonw_member_u64(w, "stripped_entries", l->stripped_entries);
	jsonw_member_u64(w, "stripped_bytes", l->stripped_bytes);
	jsonw_member_u64(w, "squashed_entries", l->overlay_entries);
	jsonw_member_u64(w, "squashed_bytes", l->overlay_bytes);
	jsonw_member_u64(w, "duplicate_entries", l->dup_entries);
	jsonw_member_u64(w, "duplicate_bytes", l->dup_bytes);
	jsonw_member_u64(w, "whiteouts", l->whiteouts);
	jsonw_member_u64(w, "whiteouts_applied", l->whiteouts_applied);
	jsonw_member_u64(w, "output_layer", l->out_layer);
	jsonw_member_bool(w, "base", l->base);
	jsonw_object_end(w);
}

static void write_out_layer(struct jsonw *w, const struct report_out_layer *o)
{
	jsonw_object_begin(w);
	jsonw_member_string(w, "digest", o->digest);
	jsonw_member_string(w, "diff_id", o->diff_id);
	jsonw_member_string(w, "mediaType", o->media_type);
	jsonw_member_u64(w, "size", o->size);
	jsonw_member_u64(w, "uncompressed", o->uncompressed);
	jsonw_member_bool(w, "copied", o->copied);
	jsonw_object_end(w);
}

static void write_image(struct jsonw *w, const struct report_image *im)
{
	jsonw_object_begin(w);
	jsonw_member_string(w, "platform", im->platform);
	jsonw_member_string(w, "source_digest", im->source_digest);
	jsonw_member_string(w, "digest", im->digest);
	jsonw_member_u64(w, "size_before", im->in_size);
	jsonw_member_u64(w, "size_after", im->out_size);
	jsonw_member_u64(w, "uncompressed_before", im->in_uncompressed);
	jsonw_member_u64(w, "uncompressed_after", im->out_uncompressed);
	jsonw_key(w, "efficiency_before");
	jsonw_double(w, im->efficiency_in, 6);
	jsonw_key(w, "efficiency_after");
	jsonw_double(w, im->efficiency_out, 6);
	jsonw_member_u64(w, "wasted_bytes_before", im->wasted_in);
	jsonw_member_u64(w, "wasted_bytes_after", im->wasted_out);
	jsonw_member_u64(w, "entries", im->entries);
	jsonw_member_u64(w, "final_paths", im->final_paths);
	jsonw_member_u64(w, "whiteouts_applied", im->whiteouts_applied);
	jsonw_member_u64(w, "duplicates_dropped", im->dup_entries);
	jsonw_member_u64(w, "duplicate_bytes", im->dup_bytes);
	jsonw_member_u64(w, "hardlinks_relinked", im->links_relinked);
	jsonw_member_u64(w, "hardlinks_materialized", im->links_materialized);
	jsonw_key(w, "layers");
	jsonw_array_begin(w);
	for (size_t i = 0; i < im->layer_count; i++)
		write_layer(w, &im->layers[i]);
	jsonw_array_end(w);
	jsonw_key(w, "output_layers");
	jsonw_array_begin(w);
	for (size_t i = 0; i < im->out_layer_count; i++)
		write_out_layer(w, &im->out_layers[i]);
	jsonw_array_end(w);
	jsonw_key(w, "rules");
	jsonw_array_begin(w);
	for (size_t i = 0; i < im->rule_count; i++) {
		jsonw_object_begin(w);
		jsonw_member_string(w, "name", im->rules[i].name);
		jsonw_member_u64(w, "bytes", im->rules[i].bytes);
		jsonw_member_u64(w, "entries", im->rules[i].entries);
		jsonw_object_end(w);
	}
	jsonw_array_end(w);
	jsonw_member_u64(w, "stripped_paths_count", im->stripped_total);
	jsonw_member_bool(w, "stripped_paths_truncated", im->stripped_truncated);
	jsonw_key(w, "stripped_paths");
	jsonw_array_begin(w);
	for (size_t i = 0; i < im->stripped_count; i++) {
		jsonw_array_begin(w);
		jsonw_string(w, im->stripped_paths[i]);
		jsonw_string(w, im->stripped_rules[i]);
		jsonw_array_end(w);
	}
	jsonw_array_end(w);
	jsonw_object_end(w);
}

void report_print_json(const struct report *rep, FILE *out)
{
	struct jsonw w;
	jsonw_init(&w, out);
	jsonw_object_begin(&w);
	jsonw_member_string(&w, "source", rep->source);
	jsonw_member_string(&w, "destination", rep->dest);
	jsonw_member_string(&w, "tag", rep->tag);
	jsonw_member_string(&w, "digest", rep->digest);
	jsonw_member_string(&w, "mediaType", rep->media_type);
	jsonw_key(&w, "policy");
	jsonw_object_begin(&w);
	jsonw_member_string(&w, "digest", rep->policy_digest);
	jsonw_member_string(&w, "squash", rep->squash);
	jsonw_member_string(&w, "compression", rep->compression);
	jsonw_key(&w, "level");
	jsonw_i64(&w, rep->level);
	jsonw_object_end(&w);
	uint64_t a, b, c, d;
	report_totals(rep, &a, &b, &c, &d);
	jsonw_key(&w, "totals");
	jsonw_object_begin(&w);
	jsonw_member_u64(&w, "size_before", a);
	jsonw_member_u64(&w, "size_after", c);
	jsonw_member_u64(&w, "uncompressed_before", b);
	jsonw_member_u64(&w, "uncompressed_after", d);
	jsonw_object_end(&w);
	jsonw_key(&w, "images");
	jsonw_array_begin(&w);
	for (size_t k = 0; k < rep->image_count; k++)
		write_image(&w, &rep->images[k]);
	jsonw_array_end(&w);
	jsonw_object_end(&w);
	fputc('\n', out);
}
