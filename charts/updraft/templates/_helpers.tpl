{{/* Names ------------------------------------------------------------------------------- */}}

{{- define "updraft.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "updraft.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "updraft.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels: include "updraft.labels" (dict "ctx" $ "component" "scheduler") */}}
{{- define "updraft.selectorLabels" -}}
app.kubernetes.io/name: {{ include "updraft.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "updraft.labels" -}}
{{ include "updraft.selectorLabels" . }}
helm.sh/chart: {{ include "updraft.chart" .ctx }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/part-of: updraft
{{- end -}}

{{/* Images ------------------------------------------------------------------------------ */}}

{{- define "updraft.image" -}}
{{- $img := .Values.images.updraft -}}
{{- if $img.digest -}}
{{- printf "%s@%s" $img.repository $img.digest -}}
{{- else -}}
{{- printf "%s:%s" $img.repository (default .Chart.AppVersion $img.tag) -}}
{{- end -}}
{{- end -}}

{{/* Service accounts -------------------------------------------------------------------- */}}

{{- define "updraft.scheduler.serviceAccountName" -}}
{{- if .Values.scheduler.serviceAccount.create -}}
{{- default (printf "%s-scheduler" (include "updraft.fullname" .)) .Values.scheduler.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.scheduler.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "updraft.apiServer.serviceAccountName" -}}
{{- if .Values.apiServer.serviceAccount.create -}}
{{- default (printf "%s-api-server" (include "updraft.fullname" .)) .Values.apiServer.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.apiServer.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "updraft.workers.serviceAccountName" -}}
{{- if .Values.workers.serviceAccount.create -}}
{{- default (printf "%s-worker" (include "updraft.fullname" .)) .Values.workers.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.workers.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* Secrets: the name of each Secret the pods read -------------------------------------- */}}

{{- define "updraft.metadataSecretName" -}}
{{- default (printf "%s-metadata" (include "updraft.fullname" .)) .Values.data.metadataSecretName -}}
{{- end -}}

{{- define "updraft.fernetKeySecretName" -}}
{{- default (printf "%s-fernet-key" (include "updraft.fullname" .)) .Values.fernetKeySecretName -}}
{{- end -}}

{{- define "updraft.apiSecretKeySecretName" -}}
{{- default (printf "%s-api-secret-key" (include "updraft.fullname" .)) .Values.apiSecretKeySecretName -}}
{{- end -}}

{{- define "updraft.adminPasswordSecretName" -}}
{{- default (printf "%s-admin-password" (include "updraft.fullname" .)) .Values.apiServer.defaultUser.passwordSecretName -}}
{{- end -}}

{{- define "updraft.pgbouncerConfigSecretName" -}}
{{- default (printf "%s-pgbouncer-config" (include "updraft.fullname" .)) .Values.pgbouncer.configSecretName -}}
{{- end -}}

{{- define "updraft.apiServer.serviceName" -}}
{{- printf "%s-api-server" (include "updraft.fullname" .) -}}
{{- end -}}

{{/* Checks that JSON schema cannot express, with messages that say what to set ---------- */}}
{{- define "updraft.checks" -}}
{{- if and (not .Values.postgresql.enabled) (not .Values.data.metadataSecretName) (not .Values.data.metadataConnection.host) -}}
{{- fail "no metadata database: set data.metadataSecretName (an existing Secret with key `connection`), or data.metadataConnection.host, or postgresql.enabled=true" -}}
{{- end -}}
{{- if and .Values.pgbouncer.enabled .Values.data.metadataSecretName (not .Values.pgbouncer.configSecretName) -}}
{{- fail "pgbouncer.enabled with data.metadataSecretName needs pgbouncer.configSecretName: an existing Secret with keys `pgbouncer.ini` and `users.txt` (the chart cannot write PgBouncer's config from a URL it never sees)" -}}
{{- end -}}
{{- end -}}

{{/* Environment of every Updraft container ---------------------------------------------- */}}
{{- define "updraft.env" -}}
- name: UPDRAFT_HOME
  value: /opt/updraft
- name: UPDRAFT__DATABASE__URL
  valueFrom:
    secretKeyRef:
      name: {{ include "updraft.metadataSecretName" . }}
      key: connection
- name: UPDRAFT__CORE__FERNET_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "updraft.fernetKeySecretName" . }}
      key: fernet-key
- name: UPDRAFT__API__SECRET_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "updraft.apiSecretKeySecretName" . }}
      key: api-secret-key
- name: UPDRAFT__CORE__EXECUTOR
  value: {{ .Values.executor | quote }}
{{- if or (eq .Values.executor "local_api") (eq .Values.executor "kubernetes") }}
- name: UPDRAFT__CORE__EXECUTION_API_SERVER_URL
  value: {{ printf "http://%s:%v/execution" (include "updraft.apiServer.serviceName" .) .Values.apiServer.service.port | quote }}
{{- end }}
{{- if eq .Values.executor "kubernetes" }}
- name: UPDRAFT__KUBERNETES__IN_CLUSTER
  value: "true"
- name: UPDRAFT__KUBERNETES__NAMESPACE
  value: {{ .Release.Namespace | quote }}
- name: UPDRAFT__KUBERNETES__WORKER_IMAGE
  value: {{ include "updraft.image" . | quote }}
- name: UPDRAFT__KUBERNETES__INSTANCE
  value: {{ include "updraft.fullname" . | quote }}
- name: UPDRAFT__KUBERNETES__WORKER_SERVICE_ACCOUNT_NAME
  value: {{ include "updraft.workers.serviceAccountName" . | quote }}
- name: UPDRAFT__KUBERNETES__POD_TEMPLATE_FILE
  value: /opt/updraft/pod_templates/pod_template_file.yaml
{{- end }}
- name: UPDRAFT__CORE__DAGS_FOLDER
  value: {{ .Values.dags.mountPath | quote }}
- name: UPDRAFT__CORE__LOAD_EXAMPLES
  value: "false"
- name: UPDRAFT__LOGGING__BASE_LOG_FOLDER
  value: /opt/updraft/logs
{{- range $section, $options := .Values.config }}
{{- range $key, $value := $options }}
- name: {{ printf "UPDRAFT__%s__%s" ($section | upper) ($key | upper) }}
  value: {{ $value | toString | quote }}
{{- end }}
{{- end }}
{{- with .Values.env }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Volumes shared by Updraft pods: home, /tmp, logs ------------------------------------ */}}
{{- define "updraft.volumes" -}}
- name: home
  emptyDir: {}
- name: tmp
  emptyDir: {}
- name: logs
{{- if .Values.logs.persistence.enabled }}
  persistentVolumeClaim:
    claimName: {{ default (printf "%s-logs" (include "updraft.fullname" .)) .Values.logs.persistence.existingClaim }}
{{- else }}
  emptyDir: {}
{{- end }}
{{- end -}}

{{- define "updraft.volumeMounts" -}}
- name: home
  mountPath: /opt/updraft
- name: tmp
  mountPath: /tmp
- name: logs
  mountPath: /opt/updraft/logs
{{- with .Values.logs.persistence.subPath }}
  subPath: {{ . }}
{{- end }}
{{- end -}}

{{- define "updraft.dagsVolume" -}}
- name: dags
{{- if .Values.dags.persistence.enabled }}
  persistentVolumeClaim:
    claimName: {{ default (printf "%s-dags" (include "updraft.fullname" .)) .Values.dags.persistence.existingClaim }}
    readOnly: true
{{- else if .Values.dags.configMapName }}
  configMap:
    name: {{ .Values.dags.configMapName }}
{{- else if .Values.dags.files }}
  configMap:
    name: {{ printf "%s-dags" (include "updraft.fullname" .) }}
{{- else }}
  emptyDir: {}
{{- end }}
{{- end -}}

{{- define "updraft.dagsVolumeMount" -}}
- name: dags
  mountPath: {{ .Values.dags.mountPath }}
  readOnly: true
{{- if and .Values.dags.persistence.enabled .Values.dags.persistence.subPath }}
  subPath: {{ .Values.dags.persistence.subPath }}
{{- end }}
{{- end -}}

{{/* The container securityContext: a component's own, else the chart-wide one, plus the uid */}}
{{- define "updraft.containerSecurityContext" -}}
{{- $sc := .component.securityContexts.container | default .ctx.Values.securityContexts.containers -}}
{{- $sc = merge (deepCopy $sc) (dict "runAsUser" (int .ctx.Values.uid) "runAsGroup" (int .ctx.Values.gid)) -}}
{{- toYaml $sc -}}
{{- end -}}

{{- define "updraft.podSecurityContext" -}}
{{- $sc := .component.securityContexts.pod | default .ctx.Values.securityContexts.pod -}}
{{- toYaml $sc -}}
{{- end -}}

{{/* The migration init container ---------------------------------------------------------- */}}
{{- define "updraft.migrateInitContainer" -}}
- name: migrate-database
  image: {{ include "updraft.image" .ctx }}
  imagePullPolicy: {{ .ctx.Values.images.updraft.pullPolicy }}
  command: ["updraft"]
  args: ["db", "migrate"]
  env:
    {{- include "updraft.env" .ctx | nindent 4 }}
  {{- with .ctx.Values.extraEnvFrom }}
  envFrom:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .ctx.Values.migrateDatabase.resources }}
  resources:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  securityContext:
    {{- include "updraft.containerSecurityContext" (dict "ctx" .ctx "component" .component) | nindent 4 }}
  volumeMounts:
    {{- include "updraft.volumeMounts" .ctx | nindent 4 }}
{{- end -}}

{{/* policy/v1 PodDisruptionBudget from Kubernetes 1.21; policy/v1beta1 before */}}
{{- define "updraft.pdbApiVersion" -}}
{{- if semverCompare ">=1.21-0" .Capabilities.KubeVersion.Version -}}
policy/v1
{{- else -}}
policy/v1beta1
{{- end -}}
{{- end -}}

{{/* The base64 data of key in a Secret that exists in the cluster, or "" (always "" without
    cluster access: helm template, Argo CD) */}}
{{- define "updraft.existingSecretData" -}}
{{- $s := lookup "v1" "Secret" .ns .name -}}
{{- if and $s $s.data (hasKey $s.data .key) -}}
{{- index $s.data .key -}}
{{- end -}}
{{- end -}}

{{/* The Kubernetes executor's default worker pod: the worker needs no database and no secret
     (its workload carries a token for the Task Execution API), only the logs volume ------- */}}
{{- define "updraft.workerPodTemplate" -}}
apiVersion: v1
kind: Pod
metadata:
  labels:
    {{- include "updraft.labels" (dict "ctx" . "component" "worker") | nindent 4 }}
spec:
  serviceAccountName: {{ include "updraft.workers.serviceAccountName" . }}
  automountServiceAccountToken: false
  enableServiceLinks: false
  securityContext:
    {{- toYaml .Values.securityContexts.pod | nindent 4 }}
  {{- with .Values.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  containers:
    - name: base
      image: {{ include "updraft.image" . }}
      imagePullPolicy: {{ .Values.images.updraft.pullPolicy }}
      env:
        - name: UPDRAFT_HOME
          value: /opt/updraft
        - name: UPDRAFT__LOGGING__BASE_LOG_FOLDER
          value: /opt/updraft/logs
      securityContext:
        {{- include "updraft.containerSecurityContext" (dict "ctx" . "component" (dict "securityContexts" (dict))) | nindent 8 }}
      volumeMounts:
        {{- include "updraft.volumeMounts" . | nindent 8 }}
  volumes:
    {{- include "updraft.volumes" . | nindent 4 }}
{{- end -}}
