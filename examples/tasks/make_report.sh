#!/bin/sh
# Writes a small report of $2 rows into the job's files folder and a result
# for the record. Called as: make_report.sh --num N
set -eu
num=${2:-10}
title=${RACCOON_PARAM_TITLE:-Report}
report="$RACCOON_FILES/report.txt"
{
    echo "$title for job $RACCOON_JOB_ID (attempt $RACCOON_ATTEMPT)"
    i=1
    while [ "$i" -le "$num" ]; do
        echo "row $i"
        i=$((i + 1))
    done
} > "$report"
printf 'rows = %d\nfile = "report.txt"\n' "$num" > "$RACCOON_RESULT"
echo "wrote $num rows"
