select loan_id from {{ ref('fct_loans') }} where days_out < 0
