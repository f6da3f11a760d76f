# Miniature Flatcar scripts repository (flatcar-airflow test fixture).
#
# TAP report helpers (POSIX sh + awk, run in the mantle container by test_update_reruns.sh).
# Results of all runs of all vendors are kept in a tab-separated file in the working directory
# (one line per test run: vendor, run, result 1/0, test name, diagnostic lines joined by \037).
#
#   tap_ingest_tapfile TAPFILE VENDOR RUN   add a kola TAP report (replacing the same vendor and run)
#   tap_list_vendors                        vendors seen so far
#   tap_failed_tests_for_vendor VENDOR      tests that never succeeded for VENDOR, one per line
#   tap_generate_report ARCH VERSION tap|md [true]
#       merged report: a test is "ok" when it succeeded at least once on every vendor that ran it;
#       error messages are included for tests that never succeeded, or for every failed run with "true"

# shellcheck shell=sh

TAPFILE_HELPER_DBNAME="${TAPFILE_HELPER_DBNAME:-tap_results.tsv}"

tap_ingest_tapfile() {
    [ -f "$1" ] || {
        echo "ERROR: TAP file $1 does not exist" >&2
        return 1
    }
    touch "${TAPFILE_HELPER_DBNAME}"
    awk -F '\t' -v vendor="$2" -v run="$3" '!($1 == vendor && $2 == run)' "${TAPFILE_HELPER_DBNAME}" \
        >"${TAPFILE_HELPER_DBNAME}.new"
    awk -v vendor="$2" -v run="$3" '
        function flush() {
            if (name != "") {
                gsub(/\t/, " ", out)
                printf "%s\t%s\t%s\t%s\t%s\n", vendor, run, result, name, out
            }
            name = ""; out = ""; in_diag = 0
        }
        /^(not )?ok([ ]|$)/ {
            flush()
            line = $0
            result = (line ~ /^ok/) ? 1 : 0
            sub(/^(not )?ok[ ]*[0-9]*[ ]*(- )?/, "", line)
            sub(/[ ]+#[ ]*(SKIP|TODO).*$/, "", line)
            name = line
            if (name == "") name = "unnamed test"
            next
        }
        /^[ ]*---[ ]*$/ { if (name != "") in_diag = 1; next }
        /^[ ]*\.\.\.[ ]*$/ { in_diag = 0; next }
        {
            if (name != "" && in_diag) {
                text = $0
                sub(/^  /, "", text)
                out = (out == "") ? text : out "\037" text
            }
        }
        END { flush() }
    ' "$1" >>"${TAPFILE_HELPER_DBNAME}.new"
    mv "${TAPFILE_HELPER_DBNAME}.new" "${TAPFILE_HELPER_DBNAME}"
}

tap_list_vendors() {
    awk -F '\t' '!seen[$1]++ { print $1 }' "${TAPFILE_HELPER_DBNAME}"
}

tap_failed_tests_for_vendor() {
    awk -F '\t' -v vendor="$1" '
        $1 == vendor {
            if (!($4 in seen)) { seen[$4] = 1; order[++n] = $4 }
            if ($3 == 1) passed[$4] = 1
        }
        END { for (i = 1; i <= n; i++) if (!(order[i] in passed)) print order[i] }
    ' "${TAPFILE_HELPER_DBNAME}"
}

tap_generate_report() {
    awk -F '\t' -v arch="$1" -v version="$2" -v format="$3" -v transient="${4:-false}" '
        {
            records++
            rv[records] = $1; rr[records] = $2; rres[records] = $3; rn[records] = $4; ro[records] = $5
            if (!($1 in vseen)) { vseen[$1] = 1; vendors[++nv] = $1 }
            if (!($4 in tseen)) { tseen[$4] = 1; tests[++nt] = $4 }
            ran[$4, $1] = 1
            if ($3 == 1) good[$4, $1] = 1
        }
        # "vendor (1, 2); other (1)" for the runs of a test with the given result
        function run_list(test, res,    i, j, v, runs, text) {
            text = ""
            for (i = 1; i <= nv; i++) {
                v = sorted[i]; runs = ""
                for (j = 1; j <= records; j++)
                    if (rn[j] == test && rv[j] == v && rres[j] == res)
                        runs = (runs == "") ? rr[j] : runs ", " rr[j]
                if (runs != "") text = (text == "") ? v " (" runs ")" : text "; " v " (" runs ")"
            }
            return text
        }
        function diag_lines(out, indent,    n, parts, i, text, line) {
            n = split(out, parts, "\037")
            text = ""
            for (i = 1; i <= n; i++) {
                line = parts[i]
                gsub(/"/, " ", line)
                text = text indent "L" i ": \"" line "\"\n"
            }
            return text
        }
        END {
            # vendors sorted by name
            for (i = 1; i <= nv; i++) sorted[i] = vendors[i]
            for (i = 2; i <= nv; i++)
                for (j = i; j > 1 && sorted[j - 1] > sorted[j]; j--) {
                    t = sorted[j]; sorted[j] = sorted[j - 1]; sorted[j - 1] = t
                }
            platforms = ""
            for (i = 1; i <= nv; i++) platforms = platforms vendors[i] " "
            if (format == "tap") {
                print "1.." nt + 1
                print "ok - Version: " version ", Architecture: " arch
                print "   ---"
                print "   Platforms tested: " platforms
                print "   ..."
            } else {
                print "### Test report for " version " / " arch
                print ""
                print "**Platforms tested** : " platforms
            }
            for (t = 1; t <= nt; t++) {
                name = tests[t]
                verdict = "ok"
                for (i = 1; i <= nv; i++)
                    if (((name, vendors[i]) in ran) && !((name, vendors[i]) in good)) verdict = "not ok"
                succeeded = run_list(name, 1)
                failed = run_list(name, 0)
                if (format == "tap") {
                    print verdict " - " name
                    print "   ---"
                    if (succeeded != "") print "   Succeeded: " succeeded
                    if (failed != "") print "   Failed: " failed
                } else {
                    mark = (verdict == "ok") ? "\342\234\205" : "\342\235\214"
                    line = mark " **" name "**"
                    if (succeeded != "") line = line "; Succeeded: " succeeded
                    if (failed != "") line = line "; Failed: " failed
                    print ""
                    print line
                }
                if (failed != "" && (verdict == "not ok" || transient == "true")) {
                    if (format == "md") { print ""; print "<details>"; print "" }
                    for (j = records; j >= 1; j--) {
                        if (rn[j] != name || rres[j] != 0) continue
                        if (format == "tap") {
                            print "   Error messages for " rv[j] ", run " rr[j] ":"
                            printf "%s", diag_lines(ro[j], "      ")
                        } else {
                            print "<summary>Diagnostic output for " rv[j] ", run " rr[j] "</summary>"
                            print ""
                            print "  ```"
                            printf "%s", diag_lines(ro[j], "  ")
                            print "  ```"
                            print ""
                        }
                    }
                    if (format == "md") { print "</details>"; print "" }
                }
                if (format == "tap") print "   ..."
            }
        }
    ' "${TAPFILE_HELPER_DBNAME}"
}
